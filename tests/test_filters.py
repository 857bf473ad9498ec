"""Parsing Qdrant's filter JSON: bounded before anything recurses, validated by qdrant-client's
models, explained in one sentence, and carried through JSON without losing meaning."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from qdrant_client import models

from service.config import Settings
from service.store.filters import (
    FilterError,
    FilterLimits,
    filter_json,
    parse_filter,
    to_edge,
    to_qdrant,
)
from tests.filter_corpus import FILTERS, match
from tests.server import run_server


def nested(depth: int) -> dict[str, Any]:
    flt: dict[str, Any] = match("kind", value="note")
    for _ in range(depth):
        flt = {"must": [flt]}
    return flt


def refused(raw: Any, limits: FilterLimits | None = None) -> FilterError:
    with pytest.raises(FilterError) as caught:
        parse_filter(raw, limits)
    return caught.value


def test_depth_limit_counts_filters_inside_filters() -> None:
    limits = FilterLimits(max_depth=3)
    parse_filter(nested(3), limits)  # the top filter and two inside it
    err = refused(nested(4), limits)
    assert (err.status, err.code) == (422, "filter_too_deep")
    assert str(err) == "filter: nested deeper than 3 levels (the limit, max_filter_depth)"
    inside_nested = {"must": [{"nested": {"key": "items", "filter": nested(3)}}]}
    assert refused(inside_nested, limits).code == "filter_too_deep"


@pytest.mark.parametrize("depth", [250, 10_000, 100_000])
def test_any_depth_is_refused_in_a_loop_not_a_recursion(depth: int) -> None:
    """250 levels raised RecursionError (a 500) in the old translation; pydantic itself gives
    up near 300 with thousands of errors. Counted on the raw JSON, depth costs nothing."""
    raw = nested(depth)
    start = time.monotonic()
    assert refused(raw).code == "filter_too_deep"
    assert time.monotonic() - start < 1.0


def test_condition_and_value_limits() -> None:
    limits = FilterLimits(max_conditions=4, max_values=50)
    parse_filter({"should": [match("n", value=i) for i in range(4)]}, limits)
    err = refused({"should": [match("n", value=i) for i in range(5)]}, limits)
    assert (err.status, err.code) == (413, "filter_too_large")
    assert "more than 4 conditions (the limit, max_filter_conditions)" in str(err)
    # every level counts, and so do conditions of any shape (pydantic would try each)
    assert refused({"must": [nested(1), nested(1), nested(1)]}, limits).code == "filter_too_large"
    assert refused({"must": [1, 2, 3, 4, 5]}, limits).code == "filter_too_large"
    parse_filter({"must": [{"has_id": list(range(45))}]}, limits)
    err = refused({"must": [{"has_id": list(range(60))}]}, limits)
    assert "more than 50 values in its conditions (the limit, max_filter_values)" in str(err)


def test_a_million_conditions_cost_milliseconds() -> None:
    big = {"should": [match("n", value=i) for i in range(1_000_000)]}
    ids = {"must": [{"has_id": list(range(2_000_000))}]}
    start = time.monotonic()
    assert refused(big).status == 413
    assert refused(ids).status == 413
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"min_should": {"conditions": [match("a", value=1)], "min_count": 0}},
            "filter.min_should.min_count: expected an integer >= 1",
        ),
        (
            {"must": [match("a", value=2**63)]},
            "filter.must[0].match.value: got 9223372036854775808, expected an integer in "
            "[-9223372036854775808, 9223372036854775807]",
        ),
        (
            {"must": [{"key": "a", "values_count": {"gt": -1}}]},
            "filter.must[0].values_count: got -1, expected an integer in [0, 18446744073709551615]",
        ),
        (
            {"must": [{"key": "a", "range": {"gte": "5"}}]},  # pydantic alone: a Unix time
            'filter.must[0].range.gte: got "5", expected number | RFC 3339 datetime | date',
        ),
        (
            {"must": [{"key": "a", "range": {"gte": True}}]},
            "filter.must[0].range.gte: got true, expected number | RFC 3339 datetime | date",
        ),
        (
            {"must": [{"key": "a", "is_empty": "yes"}]},
            'filter.must[0].is_empty: got "yes", expected boolean',
        ),
        (
            {"must": [match("a..b", value=1)]},
            'filter.must[0].key: got "a..b", expected a payload key such as "a", "a.b", "a[].b"',
        ),
        (
            {"must": [{"is_null": {"key": ""}}]},
            'filter.must[0].is_null.key: got "", expected a payload key such as "a", "a.b", '
            '"a[].b"',
        ),
        (
            {"must": [{"key": "a", "match": {"value": 1}, "range": {"gt": 0}}]},
            "filter.must[0]: a field condition takes exactly one of match, range, "
            "geo_bounding_box, geo_radius, geo_polygon, values_count, is_empty, is_null "
            "(got match, range)",
        ),
        (
            {
                "must": [
                    {
                        "key": "p",
                        "geo_polygon": {
                            "exterior": {"points": [{"lat": 0, "lon": 0}, {"lat": 1, "lon": 1}]}
                        },
                    }
                ]
            },
            "filter.must[0].geo_polygon.exterior.points: a polygon ring needs at least 4 points, "
            "the last equal to the first",
        ),
        (
            {"must": [{"slice": {"total": 2, "index": 2}}]},
            "filter.must[0].slice: expected total >= 1 and 0 <= index < total",
        ),
        (
            {"must": [{"nested": {"key": "items", "filter": {"must": [match("q", valu=1)]}}}]},
            'filter.must[0].nested.filter.must[0].match: got {"valu": 1}, expected '
            '{"value": boolean | integer | string}',
        ),
        ("note", 'filter: got "note", expected {"should"?, "min_should"?, "must"?, "must_not"?}'),
    ],
)
def test_one_sentence_with_the_path_and_the_expected_shape(raw: Any, message: str) -> None:
    err = refused(raw)
    assert (err.status, err.code) == (422, "invalid_filter")
    assert str(err).startswith(message), str(err)


def test_every_corpus_filter_round_trips_through_json() -> None:
    """How a filter reaches the embedded store's own process: `filter_json`, bytes, parse.
    (`except` must keep its alias: a plain model_dump writes `except_`, which no parser reads.)"""
    for name, raw in FILTERS.items():
        flt = parse_filter(raw)
        again = parse_filter(orjson.loads(orjson.dumps(filter_json(flt))))
        assert again == flt, name
        assert filter_json(again) == filter_json(flt), name


def test_exclusion_wraps_the_filter_for_both_engines() -> None:
    flt = parse_filter({"should": [match("a", value=1)]})
    wrapped = to_qdrant(flt, exclude=[7])
    assert wrapped == models.Filter(must=[flt], must_not=[models.HasIdCondition(has_id=[7])])
    assert to_qdrant(None, exclude=()) is None and to_qdrant(flt) is flt
    assert to_edge(None) is None
    edge = to_edge(flt, exclude=[7])
    assert "HasIdCondition(point_ids={7})" in repr(edge) and "MatchValue" in repr(edge)


def test_a_condition_the_engine_lacks_is_a_4xx_naming_it() -> None:
    """Every condition of qdrant-client 1.20's `Filter` exists in Qdrant Edge 0.9; one a newer
    client adds (stood in for here by an object the translation does not know) must be refused
    by name, never dropped."""

    class FutureCondition:
        pass

    unknown = models.Filter.model_construct(must=[FutureCondition()])
    with pytest.raises(FilterError) as caught:
        to_edge(unknown)
    assert caught.value.code == "unsupported_filter" and 400 <= caught.value.status < 500
    assert "the embedded engine has no FutureCondition" in str(caught.value)


def test_settings_default_to_the_filter_limits() -> None:
    defaults, limits = Settings.model_fields, FilterLimits()
    assert defaults["max_filter_depth"].default == limits.max_depth
    assert defaults["max_filter_conditions"].default == limits.max_conditions
    assert defaults["max_filter_values"].default == limits.max_values


def test_limits_are_settings(tmp_path: Path) -> None:
    """`--max-filter-*` reach the request schemas (checked before any store call)."""
    args = ["--store-engine", "none", "--max-filter-depth", "2", "--max-filter-conditions", "3"]
    with run_server(tmp_path, *args, "--no-warmup") as srv:
        url = f"{srv.url}/v1/collections/any/search"
        query = {"vector": [1.0]}
        deep = httpx.post(url, json={"query": query, "filter": nested(3)})
        assert deep.status_code == 422 and deep.json()["error"]["code"] == "filter_too_deep"
        assert "than 2 levels" in deep.json()["error"]["message"]
        wide = httpx.post(
            url, json={"query": query, "filter": {"should": [match("a", value=1)] * 4}}
        )
        assert wide.status_code == 413 and wide.json()["error"]["code"] == "filter_too_large"
        assert "than 3 conditions" in wide.json()["error"]["message"]
        fine = httpx.post(url, json={"query": query, "filter": nested(2)})
        assert fine.status_code == 404  # valid: on to the (missing) collection
