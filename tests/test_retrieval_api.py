"""The retrieval endpoints through real HTTP on the embedded store, at their edges: batch search
embeds its texts in one batch, recommend and search name the example that failed, payload
updates refuse what the store could not read back and change nothing then, bounds answer 422,
`/points/<action>` routes are never point ids, order_by names what it needs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.payloads import nested
from tests.server import Server

DIM = 64  # the shipped default model's dimension
N = 12
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def unit(i: int) -> list[float]:
    return [1.0 if d == i % DIM else 0.9 if d == (i + 1) % DIM else 0.0 for d in range(DIM)]


@pytest.fixture
def coll(server: Server) -> Iterator[str]:
    url = f"{server.url}/v1/collections/retrieval"
    r = httpx.put(url, json={"payload_indexes": {"n": "integer", "when": "datetime"}})
    assert r.status_code == 201, r.text
    items = [
        {
            "id": i,
            "vector": unit(i),
            "payload": {"n": i, "when": f"2024-03-{1 + i:02d}T12:00:00Z", "tag": "ab"[i % 2]},
        }
        for i in range(N)
    ]
    assert httpx.post(f"{url}/points", json={"items": items}).status_code == 200
    yield url
    httpx.delete(url)


def error(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()["error"]
    return body


def text_tower(server: Server) -> tuple[float, float]:
    """(batches, items) the text tower has run so far."""
    text = httpx.get(f"{server.url}/metrics").text
    labels = r'model="[^"]+",tower="text"'
    batches = re.search(rf"clipserve_batch_size_count{{{labels}}} (\S+)", text)
    items = re.search(rf"clipserve_items_total{{{labels}}} (\S+)", text)
    return (float(batches.group(1)) if batches else 0.0, float(items.group(1)) if items else 0.0)


def test_batch_search_embeds_its_texts_in_one_batch(server: Server, coll: str) -> None:
    texts = [f"a photo of the number {WORDS[i % 10]} {WORDS[i // 10]}" for i in range(16)]
    searches = [{"query": {"text": t}, "limit": 3} for t in texts]
    batches, items = text_tower(server)
    r = httpx.post(f"{coll}/search/batch", json={"searches": searches}, timeout=30)
    assert r.status_code == 200, r.text
    after_batches, after_items = text_tower(server)
    assert (after_batches - batches, after_items - items) == (1, 16)
    results = r.json()["results"]
    for text, hits in zip(texts[:3], results, strict=False):  # in request order
        alone = httpx.post(f"{coll}/search", json={"query": {"text": text}, "limit": 3})
        assert [h["id"] for h in hits] == [h["id"] for h in alone.json()["results"]]


def test_more_like_this_by_id_leaves_the_example_out(coll: str) -> None:
    r = httpx.post(f"{coll}/search", json={"query": {"id": 4}, "limit": 3})
    assert {h["id"] for h in r.json()["results"][:2]} == {3, 5}, r.text  # its neighbours
    r = httpx.post(f"{coll}/recommend", json={"positive": [{"id": 4}, {"id": 6}], "limit": 3})
    assert r.status_code == 200 and {4, 6}.isdisjoint(h["id"] for h in r.json()["results"])
    assert r.json()["results"][0]["id"] == 5  # between the two


def test_failed_examples_are_named(coll: str) -> None:
    r = httpx.post(f"{coll}/search", json={"query": {"id": 404}})
    assert r.status_code == 404 and error(r)["code"] == "point_not_found", r.text
    assert error(r)["param"] == "query" and "404" in error(r)["message"]
    body = {"positive": [{"id": 1}, {"id": 404}, {"vector": [1.0]}], "negative": [{"id": 2}]}
    r = httpx.post(f"{coll}/recommend", json=body)
    assert r.status_code == 404 and error(r)["param"] == "positive", r.text
    assert [(e["index"], e["code"]) for e in error(r)["items"]] == [
        (1, "point_not_found"),
        (2, "dimension_mismatch"),
    ]
    searches = [{"query": {"text": "one"}}, {"query": {"text": "   "}}, {"query": {"id": 404}}]
    r = httpx.post(f"{coll}/search/batch", json={"searches": searches})
    assert error(r)["param"] == "searches", r.text
    assert [(e["index"], e["code"]) for e in error(r)["items"]] == [
        (1, "empty_text"),
        (2, "point_not_found"),
    ]


def test_scroll_pages_order_and_count(coll: str) -> None:
    r = httpx.post(f"{coll}/points/scroll", json={"limit": 5, "with_payload": ["n"]})
    page = r.json()
    assert [p["id"] for p in page["points"]] == [0, 1, 2, 3, 4] and page["next_page_offset"] == 5
    assert page["points"][0]["payload"] == {"n": 0}
    r = httpx.post(f"{coll}/points/scroll", json={"limit": 50, "offset": 5})
    assert [p["id"] for p in r.json()["points"]] == list(range(5, N))
    assert r.json()["next_page_offset"] is None
    order = {"key": "when", "direction": "desc", "start_from": "2024-03-05T12:00:00Z"}
    r = httpx.post(f"{coll}/points/scroll", json={"limit": 3, "order_by": order})
    assert [p["id"] for p in r.json()["points"]] == [4, 3, 2], r.text
    for bad, code in (
        ({"order_by": "tag"}, "order_by_not_indexed"),
        ({"order_by": "n", "offset": 3}, "order_by_with_offset"),
    ):
        r = httpx.post(f"{coll}/points/scroll", json=bad)
        assert (r.status_code, error(r)["code"]) == (400, code), r.text
    assert "tag" in error(httpx.post(f"{coll}/points/scroll", json={"order_by": "tag"}))["message"]
    flt = {"must": [{"key": "tag", "match": {"any": ["a"]}}]}
    assert httpx.post(f"{coll}/points/count", json={"filter": flt}).json() == {"count": N // 2}
    assert httpx.post(f"{coll}/points/count", json={}).json() == {"count": N}
    for path, body in (
        ("points/scroll", {}),
        ("points/count", {}),
        ("search/batch", {"searches": [{"query": {"id": 1}}]}),
        ("recommend", {"positive": [{"id": 1}]}),
        ("points/payload", {"ids": [1], "payload": {}}),
        ("points/payload/delete", {"ids": [1], "keys": ["n"]}),
    ):
        r = httpx.post(f"{coll}-missing/{path}", json=body)
        assert (r.status_code, error(r)["code"]) == (404, "collection_not_found"), r.text


def test_payload_updates_refuse_what_the_store_could_not_keep(coll: str) -> None:
    point = f"{coll}/points/3"
    before = httpx.get(point, params={"with_vector": True}).json()
    for body, status, code in (
        ({"ids": [3, 404], "payload": {"x": 1}}, 404, "point_not_found"),
        ({"ids": [3], "payload": nested(40)}, 422, "payload_too_deep"),
        ({"ids": [3], "payload": {"big": 2**63}}, 422, "payload_integer_out_of_range"),
        ({"ids": [3], "payload": {"s": "x" * 300_000}}, 413, "payload_too_large"),
        ({"ids": [3], "filter": {"must": []}, "payload": {}}, 422, "invalid_request"),
    ):
        r = httpx.post(f"{coll}/points/payload", json=body)
        assert (r.status_code, error(r)["code"]) == (status, code), r.text
    # within the limits alone, over them once merged with what is stored
    fill = {"s": "y" * 200_000}
    assert (
        httpx.put(f"{coll}/points/payload", json={"ids": [3], "payload": fill}).status_code == 204
    )
    r = httpx.post(f"{coll}/points/payload", json={"ids": [3], "payload": {"t": "z" * 100_000}})
    assert (r.status_code, error(r)["code"]) == (413, "payload_too_large"), r.text
    assert "point 3" in error(r)["message"]
    after = httpx.get(point, params={"with_vector": True}).json()
    assert after["payload"] == fill and after["vector"] == before["vector"]
    r = httpx.post(f"{coll}/points/payload/delete", json={"ids": [404], "keys": ["s"]})
    assert r.status_code == 404 and httpx.get(point).json()["payload"] == fill


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("search/batch", {"searches": [{"query": {"id": 1}}] * 65}),
        ("search/batch", {"searches": [{"query": {"id": 1}, "limit": 1000, "offset": 9001}]}),
        ("search/batch", {"searches": []}),
        ("recommend", {"positive": [{"id": 1}] * 65}),
        ("recommend", {"negative": [{"id": 1}]}),  # average_vector needs a positive example
        ("recommend", {"positive": [{"id": 1}], "strategy": "median"}),
        ("points/scroll", {"limit": 1001}),
        ("points/count", {"exact": "yes"}),
        ("points/payload/delete", {"ids": [1], "keys": []}),
        ("search", {"query": {"id": 1}, "with_payload": {"include": 5}}),
        ("search", {"query": {"id": 1}, "with_payload": ["a..b"]}),  # the engines fail on it
        ("points/scroll", {"with_payload": {"exclude": ["meta", ""]}}),
        ("search", {"query": {"id": 1}, "params": {"hnsw_ef": "many"}}),
        ("search", {"query": {"id": 1}, "params": {"hnsw_ef": -1}}),  # Edge fails on it
        ("search", {"query": {"id": 1}, "params": {"quantization": {"oversampling": 0.5}}}),
        ("recommend", {"positive": [{"id": 1}], "params": {"acorn": {"max_selectivity": 2}}}),
        ("search", {"query": {"id": 1}, "params": {"idf": "global"}}),
        ("search", {"query": {"id": 1}, "score_threshold": "NaN"}),
    ],
)
def test_bounds_and_shapes_answer_422(coll: str, path: str, body: dict[str, Any]) -> None:
    r = httpx.post(f"{coll}/{path}", json=body)
    assert r.status_code == 422 and error(r)["code"] == "invalid_request", r.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("points/payload", {"payload": {}}),
        ("points/payload/delete", {"keys": ["s"]}),
    ],
)
def test_id_lists_are_counted_as_elsewhere(coll: str, path: str, body: dict[str, Any]) -> None:
    """Point ids are the request limits' `max_ids` (10,000), counted before any is validated."""
    r = httpx.post(f"{coll}/{path}", json={**body, "ids": list(range(10_001))})
    assert (r.status_code, error(r)["code"], error(r)["param"]) == (413, "too_many_items", "ids")
    r = httpx.post(f"{coll}/{path}", json={**body, "ids": []})
    assert (r.status_code, error(r)["code"]) == (400, "empty_input"), r.text


@pytest.mark.parametrize(
    ("action", "allow"),
    [("scroll", "POST"), ("count", "POST"), ("payload", "POST, PUT")],
)
def test_point_actions_are_not_point_ids(coll: str, action: str, allow: str) -> None:
    r = httpx.get(f"{coll}/points/{action}")
    assert r.status_code == 405 and r.headers["allow"] == allow, r.text
