"""Qdrant's filter JSON through real HTTP on both embedded engines (`--store-engine edge` and
`local`): search and delete by filter give the same ids in the same order; a malformed filter
answers 422 naming its JSON path and the expected shape; deep or huge filters answer 4xx fast,
in bounded memory, while /healthz keeps answering."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from service.manifest import load_manifest
from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.filter_corpus import ALL_OR_NOTHING, FILTERS, IDS, PAYLOADS, N, match
from tests.server import Server, run_server

ENGINES = ("edge", "local")
DIM = load_manifest(MODELS_DIR / DEFAULT_MODEL).embedding_dim
# one of each kind of condition, and the boolean structure
SUBSET = [
    "match_keyword",
    "match_true",
    "any_keywords",
    "except_on_null",
    "text_word",
    "range_float",
    "range_datetime_offset",
    "values_count_gte2",
    "geo_polygon_hole",
    "is_null",
    "has_id",
    "nested",
    "min_should",
    "filter_in_filter",
    "should_single_object",
]


def vectors(n: int, seed: int) -> list[list[float]]:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).tolist()


QUERY = vectors(1, 12345)[0]


def fill(url: str, collection: str) -> None:
    assert httpx.put(f"{url}/v1/collections/{collection}").status_code == 201
    items = [
        {"id": pid, "vector": v, "payload": p}
        for pid, v, p in zip(IDS, vectors(N, 0), PAYLOADS, strict=True)
    ]
    r = httpx.post(f"{url}/v1/collections/{collection}/points", json={"items": items}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL]
    with ExitStack() as stack:
        running = {}
        for engine in ENGINES:
            tmp = tmp_path_factory.mktemp(engine)
            running[engine] = stack.enter_context(
                run_server(tmp, *args, "--store-engine", engine, "--no-warmup")
            )
            fill(running[engine].url, "corpus")
        yield running


def search_ids(srv: Server, flt: Any, collection: str = "corpus") -> list[int | str]:
    body: dict[str, Any] = {"query": {"vector": QUERY}, "limit": N, "with_payload": False}
    if flt is not None:
        body["filter"] = flt
    r = httpx.post(f"{srv.url}/v1/collections/{collection}/search", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["results"]]


@pytest.mark.parametrize("name", SUBSET)
def test_search_same_ids_same_order_on_both_engines(servers: dict[str, Server], name: str) -> None:
    assert name not in ALL_OR_NOTHING
    edge, local = (search_ids(servers[e], FILTERS[name]) for e in ENGINES)
    assert edge == local and 0 < len(edge) < N


def test_qdrant_syntax_from_the_issue(servers: dict[str, Server]) -> None:
    """What a Qdrant user writes (the old dialect answered 422 "Input should be a valid
    boolean (and 6 more problems)")."""
    flt = {"must": [{"key": "kind", "match": {"value": "note"}}]}
    for engine in ENGINES:
        body = {"query": {"vector": QUERY}, "limit": N, "filter": flt}
        r = httpx.post(f"{servers[engine].url}/v1/collections/corpus/search", json=body)
        assert r.status_code == 200, r.text
        kinds = {h["payload"]["kind"] for h in r.json()["results"]}
        assert kinds == {"note"}


@pytest.mark.parametrize("name", ["nested", "min_should", "range_datetime_offset", "is_null"])
def test_delete_by_filter_same_on_both_engines(servers: dict[str, Server], name: str) -> None:
    left = {}
    for engine in ENGINES:
        srv = servers[engine]
        collection = f"del-{name.replace('_', '-')}"
        fill(srv.url, collection)
        doomed = set(search_ids(srv, FILTERS[name], collection))
        url = f"{srv.url}/v1/collections/{collection}/points/delete"
        assert httpx.post(url, json={"filter": FILTERS[name]}).status_code == 204
        left[engine] = search_ids(srv, None, collection)
        assert set(left[engine]) == set(IDS) - doomed and doomed
        assert httpx.delete(f"{srv.url}/v1/collections/{collection}").status_code == 204
    assert left["edge"] == left["local"]


@pytest.mark.parametrize(
    ("flt", "path", "says"),
    [
        (  # the old private dialect
            {"must": [{"key": "kind", "match": 7}]},
            "filter.must[0].match",
            'got 7, expected {"value": boolean | integer | string} | {"text": string} | '
            '{"text_any": string} | {"phrase": string} | {"prefix": string} | '
            '{"substring": string} | {"any": [string, …] | [integer, …]} | '
            '{"except": [string, …] | [integer, …]}',
        ),
        (
            {"must": [{"key": "kind", "match": {"value": 1.5}}]},
            "filter.must[0].match.value",
            "got 1.5, expected boolean | integer | string",
        ),
        (
            {"must": [{"key": "kind"}]},
            "filter.must[0]",
            "a field condition takes exactly one of match, range, geo_bounding_box, geo_radius, "
            "geo_polygon, values_count, is_empty, is_null (got none)",
        ),
        (
            {"should": [{"key": "ts", "range": {"gte": "yesterday"}}]},
            "filter.should[0].range.gte",
            'got "yesterday", expected number | RFC 3339 datetime | date',
        ),
        (
            {"must": [{"nested": {"key": "items"}}]},
            "filter.must[0].nested.filter",
            'missing, expected {"should"?, "min_should"?, "must"?, "must_not"?}',
        ),
        (
            {"must_not": [{"has_id": [1, "abc"]}]},
            "filter.must_not[0].has_id[1]",
            'got "abc", expected an unsigned integer or a UUID',
        ),
        (
            {"oops": []},
            "filter",
            'unknown field "oops", expected {"should"?, "min_should"?, "must"?, "must_not"?}',
        ),
        (
            {"must": [{"key": "n", "mtch": {"value": 1}}]},
            "filter.must[0]",
            'unknown field "mtch", expected {"key": string, "match"?, "range"?, '
            '"geo_bounding_box"?, "geo_radius"?, "geo_polygon"?, "values_count"?, "is_empty"?, '
            '"is_null"?}',
        ),
        (
            {"must": [{"key": "tags", "match": {"any": ["a", 1]}}]},
            "filter.must[0].match.any",
            'got ["a", 1], expected [string, …] | [integer, …]',
        ),
        (
            {
                "must": [
                    {"key": "loc", "geo_radius": {"center": {"lat": 91, "lon": 0}, "radius": 1}}
                ]
            },
            "filter.must[0].geo_radius.center",
            'got {"lon": 0.0, "lat": 91.0}, expected lat in [-90, 90] and lon in [-180, 180]',
        ),
    ],
)
@pytest.mark.parametrize("endpoint", ["search", "points/delete"])
def test_malformed_filter_says_where_and_what_in_one_sentence(
    servers: dict[str, Server], flt: dict[str, Any], path: str, says: str, endpoint: str
) -> None:
    body: dict[str, Any] = {"filter": flt}
    if endpoint == "search":
        body["query"] = {"vector": QUERY}
    r = httpx.post(f"{servers['edge'].url}/v1/collections/corpus/{endpoint}", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_filter" and error["param"] == path
    assert error["message"] == f"{path}: {says}", error["message"]
    assert "more problems" not in error["message"] and "\n" not in error["message"]


# --- hostile filters -------------------------------------------------------------------------
def deep(depth: int) -> bytes:
    """A search whose filter nests `depth` levels, written as text (orjson stops at 254)."""
    inner = b'{"key": "kind", "match": {"value": "note"}}'
    flt = b'{"must": [' * depth + inner + b"]}" * depth
    return b'{"query": {"vector": %s}, "filter": %s}' % (orjson.dumps(QUERY), flt)


def search_with(flt: Any) -> bytes:
    return orjson.dumps({"query": {"vector": QUERY}, "filter": flt})


def polygon(n: int) -> dict[str, Any]:
    return {"exterior": {"points": [{"lat": 0, "lon": i / 1e4} for i in range(n)]}}


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


HOSTILE: dict[str, tuple[Callable[[], bytes], int]] = {
    "250 levels deep": (lambda: deep(250), 422),
    "10,000 levels deep": (lambda: deep(10_000), 422),
    "20,000 conditions": (
        lambda: search_with({"should": [match("n", value=i) for i in range(20_000)]}),
        413,
    ),
    "1,000,000 ids": (lambda: search_with({"must": [{"has_id": list(range(1_000_000))}]}), 413),
    "polygon of 50,000 points": (
        lambda: search_with({"must": [{"key": "loc", "geo_polygon": polygon(50_000)}]}),
        413,
    ),
}
LIMIT_NAMES = {422: "max_filter_depth", 413: "max_filter_"}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_filter_answers_4xx_fast_with_the_server_responsive(
    servers: dict[str, Server], case: str
) -> None:
    """Edge holds the GIL while it filters: whatever the filter, it must be refused before it
    reaches the engine (or the validator), in bounded time and memory. (Sizes stay well past the
    limits but small enough that parsing the JSON body itself, on the event loop before any
    filter code, stays far from the 1 s /healthz bound on a loaded 2-core machine.)"""
    build, status = HOSTILE[case]
    body = build()
    srv = servers["edge"]
    before = rss_peak_mb(srv.process.pid)
    answer: dict[str, Any] = {}

    def send() -> None:
        start = time.monotonic()
        answer["response"] = httpx.post(
            f"{srv.url}/v1/collections/corpus/search",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        answer["seconds"] = time.monotonic() - start

    sender = threading.Thread(target=send)
    sender.start()
    health = []
    while sender.is_alive():
        start = time.monotonic()
        assert httpx.get(f"{srv.url}/healthz", timeout=5).status_code == 200
        health.append(time.monotonic() - start)
        time.sleep(0.02)
    sender.join()
    r = answer["response"]
    assert r.status_code == status, r.text[:300]
    if case != "10,000 levels deep":  # refused by the JSON parser itself (depth 1024)
        assert LIMIT_NAMES[status] in r.json()["error"]["message"], r.text[:300]
    assert answer["seconds"] < 10, answer["seconds"]
    assert max(health, default=0) < 1.0, (case, health)
    growth = rss_peak_mb(srv.process.pid) - before
    assert growth < 10 * len(body) / 2**20 + 100, f"peak RSS grew {growth:.0f} MB"
    assert search_ids(srv, FILTERS["match_keyword"])  # and the store still serves
