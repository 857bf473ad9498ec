"""The retrieval API means the same on both embedded engines, through HTTP: the same request
documents (filters of every kind, searches with Qdrant's options, batch searches, recommend with
each strategy, scroll pages and order_by, counts, payload updates) sent to a server on Qdrant Edge
and to one on qdrant-client's local mode (Qdrant's own Python code, the server's code path) get
the same ids in the same order, and the same payloads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.filter_corpus import ALL_OR_NOTHING, FILTERS, IDS, PAYLOADS, U1, U2, N
from tests.server import Server, run_server

pytestmark = pytest.mark.slow
ENGINES = ("edge", "local")
DIM = 64
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Not "mixed": an index of one type holds only values of that type (docs/traps.md, filters)
INDEXES = {"n": "integer", "rank": "integer", "x": "float", "kind": "keyword", "tags": "keyword"}


def vector(i: int) -> list[float]:
    v = np.random.default_rng(i).normal(size=DIM)
    return [float(x) for x in v / np.linalg.norm(v)]


def payload(i: int) -> dict[str, Any]:
    """The filter corpus's payload, and `rank`: a permutation, so order_by has no ties."""
    return {**PAYLOADS[i], "rank": (i * 17) % N}


def items() -> list[dict[str, Any]]:
    """Vectors, and texts (the same model embeds them alike on both servers)."""
    out = []
    for i, pid in enumerate(IDS):
        item: dict[str, Any] = {"id": pid, "payload": payload(i)}
        if i % 5 == 0:
            item["text"] = f"the number {WORDS[i % 10]} and the number {WORDS[i // 10]}"
        else:
            item["vector"] = vector(i)
        out.append(item)
    return out


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A server per engine, each holding the same collection."""
    with ExitStack() as stack:
        urls = {}
        for engine in ENGINES:
            tmp = tmp_path_factory.mktemp(f"conformance-{engine}")
            args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL]
            srv: Server = stack.enter_context(run_server(tmp, *args, "--store-engine", engine))
            url = f"{srv.url}/v1/collections/conf"
            assert httpx.put(url, json={"payload_indexes": INDEXES}).status_code == 201
            r = httpx.post(f"{url}/points", json={"items": items()}, timeout=60)
            assert r.status_code == 200, r.text
            urls[engine] = url
        yield urls


def send(servers: dict[str, str], path: str, body: Any, method: str = "POST") -> list[Any]:
    """The same request to each server; every answer, parsed."""
    answers = []
    for url in servers.values():
        r = httpx.request(method, f"{url}{path}", json=body, timeout=60)
        assert r.status_code in (200, 204), (url, path, body, r.text)
        answers.append(r.json() if r.status_code == 200 else None)
    return answers


def hits(answer: dict[str, Any]) -> list[tuple[Any, Any]]:
    return [(h["id"], h["payload"]) for h in answer["results"]]


def alike(a: Any, b: Any, where: str = "") -> None:
    """Equal, except scores and vector components, which may differ in the last float32 bits
    (local mode computes in float64)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k in ("score", "vector") and a[k] is not None and b[k] is not None:
                np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=f"{where}.{k}")
            else:
                alike(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            alike(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def same(answers: list[Any], view: Any = lambda a: a) -> Any:
    first = view(answers[0])
    for other in answers[1:]:
        alike(view(other), first)
    return first


@pytest.mark.parametrize("name", FILTERS)
def test_filters_select_the_same_points(servers: dict[str, str], name: str) -> None:
    flt = FILTERS[name]
    body = {"query": {"vector": vector(99)}, "filter": flt, "limit": N}
    found = same(send(servers, "/search", body), hits)
    exact = same(send(servers, "/points/count", {"filter": flt}))
    assert exact == {"count": len(found)}
    # an estimate (from payload indexes on Qdrant Edge; local mode counts exactly)
    for estimate in send(servers, "/points/count", {"filter": flt, "exact": False}):
        assert 0 <= estimate["count"] <= N
    scrolled = same(send(servers, "/points/scroll", {"filter": flt, "limit": N}))
    assert sorted((p["id"] for p in scrolled["points"]), key=str) == sorted(
        (i for i, _ in found), key=str
    )
    assert 0 < len(found) < N or name in ALL_OR_NOTHING


SEARCHES: dict[str, dict[str, Any]] = {
    "vector": {"query": {"vector": vector(5)}, "limit": 7},
    "text": {"query": {"text": "a photo of the number seven"}, "limit": 5},
    "stored point": {"query": {"id": 10}, "limit": 5, "with_payload": ["tag"]},
    "uuid point": {"query": {"id": U2}, "limit": 5},
    "offset": {"query": {"vector": vector(6)}, "limit": 5, "offset": 3},
    "threshold": {"query": {"vector": vector(7)}, "limit": 30, "score_threshold": 0.2},
    "params": {
        "query": {"vector": vector(8)},
        "params": {"hnsw_ef": 64, "exact": True, "quantization": {"rescore": True}},
        "with_payload": {"include": ["n", "meta"]},
    },
    "exclude keys": {"query": {"vector": vector(9)}, "with_payload": {"exclude": ["tags"]}},
    "filtered": {"query": {"vector": vector(1)}, "filter": FILTERS["geo_radius"], "limit": 6},
    "no payload": {"query": {"vector": vector(2)}, "with_payload": False, "limit": 4},
}


@pytest.mark.parametrize("name", SEARCHES)
def test_searches_answer_alike(servers: dict[str, str], name: str) -> None:
    body = SEARCHES[name]
    found = same(send(servers, "/search", body), hits)
    assert found and body["query"].get("id") not in {i for i, _ in found}


def test_a_batch_answers_as_its_searches_one_by_one(servers: dict[str, str]) -> None:
    searches = list(SEARCHES.values())
    batch = same(send(servers, "/search/batch", {"searches": searches}))
    assert len(batch["results"]) == len(searches)
    for search, results in zip(searches, batch["results"], strict=True):
        alone = same(send(servers, "/search", search))
        assert [h["id"] for h in results] == [h["id"] for h in alone["results"]]


RECOMMENDS: dict[str, dict[str, Any]] = {
    "ids": {"positive": [{"id": 3}, {"id": 4}], "negative": [{"id": 6}]},
    "mixed examples": {
        "positive": [{"id": 12}, {"text": "a photo of the number five"}, {"vector": vector(30)}],
        "negative": [{"text": "a photo of the number zero"}],
        "limit": 8,
    },
    "best score": {
        "positive": [{"id": 3}, {"id": 17}],
        "negative": [{"id": 6}],
        "strategy": "best_score",
    },
    "sum scores": {"positive": [{"id": 3}], "negative": [{"id": 9}], "strategy": "sum_scores"},
    "negative alone": {"negative": [{"id": 6}, {"id": 7}], "strategy": "best_score", "limit": 4},
    "filtered": {"positive": [{"id": 3}], "filter": FILTERS["range_int"], "offset": 2, "limit": 4},
}


@pytest.mark.parametrize("name", RECOMMENDS)
def test_recommend_answers_alike(servers: dict[str, str], name: str) -> None:
    body = RECOMMENDS[name]
    found = same(send(servers, "/recommend", body), hits)
    examples = {
        e["id"] for e in [*body.get("positive", []), *body.get("negative", [])] if "id" in e
    }
    assert found and not examples & {i for i, _ in found}  # the examples are left out


def test_scroll_pages_alike(servers: dict[str, str]) -> None:
    for flt in (None, FILTERS["must_not"]):
        seen: list[Any] = []
        offset = None
        while True:
            body = {"limit": 6, "offset": offset, "filter": flt, "with_vectors": True}
            page = same(send(servers, "/points/scroll", body))
            seen += [p["id"] for p in page["points"]]
            assert all(len(p["vector"]) == DIM for p in page["points"])
            offset = page["next_page_offset"]
            if offset is None:
                break
        assert len(seen) == len(set(seen)) and (flt is not None or set(seen) == set(IDS))


@pytest.mark.parametrize(
    "order_by",
    [
        "rank",
        {"key": "rank", "direction": "desc"},
        {"key": "rank", "start_from": 11},
        {"key": "x", "direction": "desc", "start_from": 7.5},
    ],
)
def test_scroll_orders_alike(servers: dict[str, str], order_by: Any) -> None:
    body = {"limit": 9, "order_by": order_by, "filter": FILTERS["must_not"]}
    page = same(send(servers, "/points/scroll", body))
    values = [p["order_value"] for p in page["points"]]
    desc = isinstance(order_by, dict) and order_by.get("direction") == "desc"
    assert len(values) == 9 and values == sorted(values, reverse=desc)
    assert page["next_page_offset"] is None  # ordered scrolls page on with start_from


def test_payload_updates_alike(servers: dict[str, str]) -> None:
    """Each update applied to a model of the payloads too: the points a filter picks are read
    from the servers (alike) just before it runs."""
    before = same(send(servers, "/points/scroll", {"limit": N, "with_vectors": True}))
    model = {p["id"]: dict(p["payload"]) for p in before["points"]}
    for method, path, body in [
        ("POST", "/points/payload", {"ids": [1, U1], "payload": {"kind": "fox", "new": 1}}),
        ("PUT", "/points/payload", {"ids": [2], "payload": {"only": {"a": [1, 2]}}}),
        ("POST", "/points/payload", {"filter": FILTERS["range_int"], "payload": {"mid": True}}),
        ("POST", "/points/payload/delete", {"ids": [4, 5], "keys": ["tags", "meta"]}),
        ("POST", "/points/payload/delete", {"filter": FILTERS["match_true"], "keys": ["x"]}),
        ("PUT", "/points/payload", {"filter": FILTERS["match_int"], "payload": {}}),
    ]:
        picked = body.get("ids")
        if picked is None:
            scroll = {"filter": body["filter"], "limit": N, "with_payload": False}
            picked = [p["id"] for p in same(send(servers, "/points/scroll", scroll))["points"]]
        assert picked
        for pid in picked:
            if "keys" in body:
                model[pid] = {k: v for k, v in model[pid].items() if k not in body["keys"]}
            else:
                model[pid] = (
                    {**model[pid], **body["payload"]} if method == "POST" else body["payload"]
                )
        send(servers, path, body, method)
    after = same(send(servers, "/points/scroll", {"limit": N, "with_vectors": True}))
    assert {p["id"]: p["payload"] for p in after["points"]} == model
    vectors = {p["id"]: p["vector"] for p in before["points"]}
    assert all(p["vector"] == vectors[p["id"]] for p in after["points"])  # not re-embedded
    # and filters see the changed payloads
    mid = {"filter": {"must": [{"key": "mid", "match": {"value": True}}]}}
    count = same(send(servers, "/points/count", mid))["count"]
    assert count == sum(1 for p in model.values() if p.get("mid") is True) > 0
