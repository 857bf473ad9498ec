"""Collections through real HTTP, at their edges: point ids that are not ids, routes that are not
point ids, 405s that name every allowed method, PUT on an existing collection, options only a
server honours, and values the engine would store as something else (float32 overflow, 64-bit
integers) or could not read back (payloads nested too deep, too large)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.payloads import nested
from tests.server import Server, watch_health

DIM = 64  # the shipped default model's dimension


@pytest.fixture
def coll(server: Server) -> Iterator[str]:
    url = f"{server.url}/v1/collections/edges"
    assert httpx.put(url, json={}).status_code == 201
    yield url
    httpx.delete(url)


def vector(i: int = 0) -> list[float]:
    return [1.0 if d == i % DIM else 0.0 for d in range(DIM)]


def upsert(url: str, items: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{url}/points", json={"items": items}, timeout=30)


def error(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()["error"]
    return body


@pytest.mark.parametrize(
    "bad",
    ["²", "٣", "٣" * 32, "18446744073709551616", "99999999999999999999999", "-1", "1.5", "x"],
)
def test_ids_that_are_not_ids_answer_400(coll: str, bad: str) -> None:
    assert upsert(coll, [{"id": 3, "vector": vector(3)}]).status_code == 200
    for r in (
        httpx.get(f"{coll}/points/{bad}"),
        httpx.delete(f"{coll}/points/{bad}"),
        httpx.post(f"{coll}/points/exists", json={"ids": [bad]}),
        upsert(coll, [{"id": bad, "vector": vector()}]),
    ):
        assert r.status_code == 400, (bad, r.text)
        assert error(r)["code"] == "invalid_id"
    assert httpx.get(f"{coll}").json()["count"] == 1  # "٣" never became point 3


def test_integer_ids_are_unsigned_64_bit(coll: str) -> None:
    top = 2**64 - 1
    assert upsert(coll, [{"id": top, "vector": vector()}]).json()["ids"] == [top]
    assert httpx.get(f"{coll}/points/{top}").json()["id"] == top
    r = upsert(coll, [{"id": -1, "vector": vector()}])
    assert r.status_code == 400 and error(r)["code"] == "invalid_id", r.text
    for r in (  # JSON numbers past 64 bits: the parser's own 422
        upsert(coll, [{"id": 2**64, "vector": vector()}]),
        httpx.post(f"{coll}/points/exists", json={"ids": [2**64]}),
    ):
        assert r.status_code == 422 and error(r)["code"] == "invalid_request", r.text


def test_point_actions_are_not_point_ids(coll: str) -> None:
    for action in ("delete", "exists"):
        r = httpx.get(f"{coll}/points/{action}")
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == "POST" and error(r)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/collections/edges", "DELETE, GET, PUT"),
        ("PATCH", "/v1/collections", "GET"),
        ("PUT", "/v1/collections/edges/points/7", "DELETE, GET"),
        ("GET", "/v1/collections/edges/points", "POST"),
        ("GET", "/v1/collections/edges/search", "POST"),
    ],
)
def test_405_names_every_allowed_method(
    server: Server, coll: str, method: str, path: str, allowed: str
) -> None:
    r = httpx.request(method, f"{server.url}{path}")
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allowed


def test_put_on_an_existing_collection_with_other_options_conflicts(server: Server) -> None:
    url = f"{server.url}/v1/collections/opts"
    try:
        assert httpx.put(url, json={"distance": "dot", "hnsw_m": 8}).status_code == 201
        assert httpx.put(url, json={"distance": "dot"}).status_code == 200  # same: idempotent
        assert httpx.put(url, json={}).status_code == 200  # nothing asked for: confirmed
        r = httpx.put(url, json={"distance": "cosine", "hnsw_m": 16, "on_disk": False})
        assert r.status_code == 409 and error(r)["code"] == "collection_exists", r.text
        message = error(r)["message"]
        assert "distance is 'dot', not 'cosine'" in message and "hnsw_m is 8, not 16" in message
        assert "on_disk" not in message  # it matches
        assert httpx.get(url).json()["config"]["distance"] == "dot"  # nothing changed
    finally:
        httpx.delete(url)


@pytest.mark.parametrize("option", [{"shard_number": 2}, {"replication_factor": 2}])
def test_server_only_options_are_refused_on_the_embedded_store(
    server: Server, option: dict[str, int]
) -> None:
    r = httpx.put(f"{server.url}/v1/collections/sharded", json=option)
    assert r.status_code == 400, r.text
    assert error(r)["code"] == "server_only_option" and "Qdrant server" in error(r)["message"]
    assert httpx.get(f"{server.url}/v1/collections/sharded").status_code == 404


def test_vectors_that_overflow_float32_are_refused(coll: str) -> None:
    big = vector()
    big[1] = 1e39  # finite JSON, infinite as float32: stored as NaN and never found
    r = upsert(coll, [{"id": 1, "vector": big}])
    assert r.status_code == 422 and "items[0].vector[1]" in error(r)["message"], r.text
    search = httpx.post(f"{coll}/search", json={"query": {"vector": big}})
    assert search.status_code == 422, search.text
    assert httpx.get(coll).json()["count"] == 0


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"n": 2**63}, 422, "payload_integer_out_of_range"),
        ({"n": [-(2**63) - 1]}, 422, "payload_integer_out_of_range"),
        ({"deep": {"n": 2**64 + 1}}, 422, "payload_integer_out_of_range"),  # a float to orjson
        (nested(33), 422, "payload_too_deep"),
        (nested(200), 422, "payload_too_deep"),
        ({"s": "x" * 300_000}, 413, "payload_too_large"),
        ({f"k{i}": i for i in range(5000)}, 413, "payload_too_many_keys"),
    ],
)
def test_payloads_the_engine_cannot_keep_are_refused(
    coll: str, payload: dict[str, Any], status: int, code: str
) -> None:
    good = {"id": 1, "vector": vector(1), "payload": {"ok": True}}
    r = upsert(coll, [good, {"id": 2, "vector": vector(2), "payload": payload}])
    assert r.status_code == status, r.text[:300]
    assert error(r)["items"][0]["index"] == 1 and error(r)["items"][0]["code"] == code
    limit = {"payload_too_deep": "max_payload_depth", "payload_too_large": "max_payload_bytes"}
    assert limit.get(code, "") in error(r)["message"]
    assert httpx.get(coll).json()["count"] == 0  # all or nothing


def test_payloads_at_the_limits_are_stored_and_read_back(coll: str) -> None:
    payloads = [
        nested(32),
        {"n": 2**63 - 1, "m": -(2**63), "f": 1e19, "avogadro": 6.02e23},
        {f"k{i}": i for i in range(4096)},
    ]
    items = [{"id": i, "vector": vector(i), "payload": p} for i, p in enumerate(payloads)]
    assert upsert(coll, items).status_code == 200
    for i, p in enumerate(payloads):
        assert httpx.get(f"{coll}/points/{i}").json()["payload"] == p
    hits = httpx.post(f"{coll}/search", json={"query": {"vector": vector(0)}, "limit": 3})
    assert hits.status_code == 200 and len(hits.json()["results"]) == 3


def test_point_lists_are_counted_before_their_items_are_validated(
    server: Server, coll: str
) -> None:
    """Upserted items (`max_items`, 64 on the session server) and point ids (10,000) are counted
    first: a flood of bad items is one 413, never a validation of each; nothing is deleted."""
    assert upsert(coll, [{"id": 1, "vector": vector(1)}]).status_code == 200
    too_many = [{"id": i, "vector": vector(i)} for i in range(65)]
    bogus = [{"bogus": i} for i in range(100_000)]
    ids = list(range(10_001))
    with watch_health(server.url) as health:
        started = time.monotonic()
        responses = {
            "items": [upsert(coll, too_many), upsert(coll, bogus)],
            "ids": [
                httpx.post(f"{coll}/points/exists", json={"ids": ids}),
                httpx.post(f"{coll}/points/delete", json={"ids": ids}),
            ],
        }
        elapsed = time.monotonic() - started
    for param, answers in responses.items():
        for r in answers:
            assert r.status_code == 413, r.text
            assert error(r)["code"] == "too_many_items" and error(r)["param"] == param
    assert elapsed < 10, f"{elapsed:.1f}s"
    assert not health.failures and health.slowest_s < 1.0
    assert httpx.get(coll).json()["count"] == 1
    schemas = httpx.get(f"{server.url}/openapi.json").json()["components"]["schemas"]
    assert schemas["UpsertRequest"]["properties"]["items"]["maxItems"] == 64
    assert schemas["PointIds"]["properties"]["ids"]["maxItems"] == 10_000
