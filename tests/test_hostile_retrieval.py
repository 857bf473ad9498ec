"""The heaviest retrieval requests the API accepts, against a server on its default settings and
a collection of 20,000 points: each asserts the status, a bound on time and on the server's
memory (its store process included), and that `/healthz` answers in under a second meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.store.factory import open_store
from service.store.types import CollectionOptions
from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.server import Server, run_server
from tests.watch import watching

pytestmark = pytest.mark.slow
DIM = 64
N = 20_000
RSS_LIMIT_MB = 1500
MAX_TEXT_CHARS = 10_000  # the default


async def _fill(data: Path) -> None:
    """A collection of N points written through the store code, as a server would have; one
    point's payload is 200 KB, within the limits alone."""
    store = open_store("edge", data, None, None)
    await store.open()
    opts = CollectionOptions(payload_indexes={"n": "integer"})
    await store.create_collection("big", DEFAULT_MODEL, DIM, opts)
    rng = np.random.default_rng(0)
    for start in range(0, N, 10_000):
        ids = list(range(start, start + 10_000))
        vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        payloads: list[dict[str, Any]] = [{"n": i} for i in ids]
        if start == 0:
            payloads[123] = {"n": 123, "blob": "b" * 200_000}
        await store.upsert("big", ids, vectors, payloads)
    await store.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile-retrieval")
    asyncio.run(_fill(tmp / "data"))
    args = [
        "--models-dir",
        str(MODELS_DIR),
        "--models",
        DEFAULT_MODEL,
        "--data-dir",
        str(tmp / "data"),
    ]
    with run_server(tmp, *args) as server:
        yield server


def timed(
    srv: Server, method: str, path: str, body: dict[str, Any], root: str = "/v1/collections/big"
) -> tuple[httpx.Response, float, Any]:
    url = f"{srv.url}{root}{path}"
    with watching(srv.url, srv.process.pid) as watch:
        start = time.perf_counter()
        r = httpx.request(method, url, json=body, timeout=120)
        took = time.perf_counter() - start
    assert watch.slowest_healthz_s < 1.0 and not watch.failures, watch
    assert watch.peak_rss_mb < RSS_LIMIT_MB, watch
    return r, took, watch


def count(srv: Server, flt: dict[str, Any]) -> int:
    r = httpx.post(f"{srv.url}/v1/collections/big/points/count", json={"filter": flt})
    return int(r.json()["count"])


def test_the_largest_batch_search(srv: Server) -> None:
    """64 searches, each with the longest text and a filter of 64 conditions."""
    words = "seven eight nine " * (MAX_TEXT_CHARS // 17)
    flt = {
        "should": [{"key": "n", "range": {"gte": 300 * k, "lt": 300 * k + 100}} for k in range(64)]
    }
    searches = [
        {"query": {"text": f"{k} {words}"[:MAX_TEXT_CHARS]}, "filter": flt, "limit": 150}
        for k in range(64)
    ]
    r, took, _ = timed(srv, "POST", "/search/batch", {"searches": searches})
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    assert len(results) == 64 and all(len(hits) == 150 for hits in results)
    assert all(h["id"] % 300 < 100 for hits in results for h in hits)
    assert took < 30, took


def test_a_payload_update_over_every_point(srv: Server) -> None:
    everything = {"must": [{"key": "n", "range": {"gte": 0}}]}
    r, took, _ = timed(
        srv, "POST", "/points/payload", {"filter": everything, "payload": {"tag": "x"}}
    )
    assert r.status_code == 204, r.text[:300]
    assert took < 60, took
    assert count(srv, {"must": [{"key": "tag", "match": {"value": "x"}}]}) == N


def test_a_merge_that_would_grow_one_payload_too_large_changes_nothing(srv: Server) -> None:
    everything = {"must": [{"key": "n", "range": {"gte": 0}}]}
    body = {"filter": everything, "payload": {"tag": "y", "pad": "p" * 100_000}}
    r, took, _ = timed(srv, "POST", "/points/payload", body)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text
    assert "point 123" in r.json()["error"]["message"]
    assert took < 60, took
    assert count(srv, {"must": [{"key": "tag", "match": {"value": "y"}}]}) == 0


def test_long_texts_are_tokenized_off_the_event_loop(srv: Server) -> None:
    """Text cleaning is Python (about 2 ms per 10k characters): the most texts of the longest
    length (1,024 x 10k: a search batch, recommend examples and /v1/embeddings all tokenize
    this way) held the event loop, and /healthz, for seconds."""
    words = "seven eight nine " * (MAX_TEXT_CHARS // 17)
    texts = [f"{k} {words}"[:MAX_TEXT_CHARS] for k in range(1024)]
    r, took, _ = timed(srv, "POST", "/embeddings", {"input": texts}, root="/v1")
    assert r.status_code == 200 and len(r.json()["data"]) == 1024, r.text[:300]
    assert took < 60, took
