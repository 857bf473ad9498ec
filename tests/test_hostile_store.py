"""Hostile store input against a server on its default settings (the store deadline shortened
where a test waits for it): each case asserts the status, a bound on time and on the server's
memory (its store process included), that `/healthz` answers in under a second meanwhile, and
that the collection still serves afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
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
from tests.payloads import nested
from tests.server import Server, run_server
from tests.watch import alive, store_process, watching

pytestmark = pytest.mark.slow
ARGS = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL]
DIM = 64
RSS_LIMIT_MB = 1500


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile-store")
    with run_server(tmp, *ARGS, "--data-dir", str(tmp / "data")) as server:
        url = f"{server.url}/v1/collections/victim"
        assert httpx.put(url, json={}).status_code == 201
        items = [{"id": i, "vector": unit(i), "payload": {"n": i}} for i in range(20)]
        assert httpx.post(f"{url}/points", json={"items": items}).status_code == 200
        yield server


def unit(i: int) -> list[float]:
    return [1.0 if d == i % DIM else 0.0 for d in range(DIM)]


def intact(url: str, count: int = 20) -> None:
    """The collection reads, searches, filters and takes writes as before."""
    assert httpx.get(url).json()["count"] == count
    assert httpx.get(f"{url}/points/7").json()["payload"] == {"n": 7}
    flt = {"must": [{"key": "n", "range": {"gte": 5, "lt": 8}}]}
    hits = httpx.post(
        f"{url}/search", json={"query": {"vector": unit(6)}, "filter": flt, "limit": 5}
    )
    assert hits.status_code == 200 and hits.json()["results"][0]["id"] == 6, hits.text
    assert sorted(h["id"] for h in hits.json()["results"]) == [5, 6, 7]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (nested(130), 422, "payload_too_deep"),  # Qdrant Edge cannot read 128+ levels back
        (nested(900), 422, "payload_too_deep"),
        ({"text": "x" * 5_000_000}, 413, "payload_too_large"),
        ({f"k{i}": i for i in range(5000)}, 413, "payload_too_many_keys"),
        ({"k": [{"x": i} for i in range(10_000)]}, 413, "payload_too_many_keys"),
    ],
    # (a body of a million keys costs seconds in the JSON parser before any limit of ours runs)
    ids=["130 deep", "900 deep", "5 MB string", "5k keys", "10k nested keys"],
)
def test_hostile_payloads_are_refused_and_poison_nothing(
    srv: Server, payload: dict[str, Any], status: int, code: str
) -> None:
    url = f"{srv.url}/v1/collections/victim"
    body = {"items": [{"id": 99, "vector": unit(9), "payload": payload}]}
    with watching(srv.url, srv.process.pid) as watch:
        start = time.perf_counter()
        r = httpx.post(f"{url}/points", json=body, timeout=60)
        took = time.perf_counter() - start
    assert r.status_code == status, r.text[:300]
    assert r.json()["error"]["items"][0]["code"] == code
    assert took < 10, took
    assert watch.slowest_healthz_s < 1.0 and not watch.failures, watch
    assert watch.peak_rss_mb < RSS_LIMIT_MB, watch
    assert httpx.get(f"{url}/points/99").status_code == 404  # nothing was written
    intact(url)


async def _fill(data: Path, n: int) -> None:
    """A collection of n points written through the store code, as a server would have."""
    store = open_store("edge", data, None, None)
    await store.open()
    await store.create_collection("big", DEFAULT_MODEL, DIM, CollectionOptions())
    rng = np.random.default_rng(0)
    for start in range(0, n, 10_000):
        ids = list(range(start, min(n, start + 10_000)))
        vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        await store.upsert("big", ids, vectors, [{"n": i} for i in ids])
    await store.close()


def _largest_accepted_filter(url: str) -> dict[str, Any]:
    """The widest `should` of range conditions the API accepts (each condition costs the
    engine a payload read per point, so this is the slowest filter a client may send)."""
    for width in (64, 32, 16, 8):
        flt = {
            "should": [{"key": "n", "range": {"gte": -k - 2, "lt": -k - 1}} for k in range(width)]
        }
        probe = httpx.post(
            f"{url}/v1/collections/no-such/search",
            json={"query": {"vector": unit(0)}, "filter": flt},
        )
        if probe.status_code == 404:
            return flt
    raise AssertionError("the API accepts no filter of 8 conditions")


def test_a_slow_store_call_stalls_nothing_else(tmp_path: Path) -> None:
    """The filter matches nothing, so the engine reads every point's payload once per
    condition: seconds on 100k points, all of it holding the GIL in the store process. The API
    abandons the call at the store deadline (504), the stuck store process is restarted, and
    /healthz never waits."""
    data, n = tmp_path / "data", 100_000
    asyncio.run(_fill(data, n))
    args = [*ARGS, "--data-dir", str(data), "--store-timeout-s", "1"]
    with run_server(tmp_path, *args) as srv:
        big = f"{srv.url}/v1/collections/big"
        flt = _largest_accepted_filter(srv.url)
        before = store_process(srv.process.pid)
        with watching(srv.url, srv.process.pid) as watch:
            start = time.perf_counter()
            r = httpx.post(
                f"{big}/search", json={"query": {"vector": unit(0)}, "filter": flt}, timeout=60
            )
            took = time.perf_counter() - start
            again = httpx.get(f"{srv.url}/readyz", timeout=5)
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "store_timeout" and r.headers["retry-after"] == "1"
        assert took < 4, took
        assert watch.slowest_healthz_s < 1.0 and not watch.failures, watch
        assert watch.peak_rss_mb < RSS_LIMIT_MB, watch
        assert again.status_code in (200, 503)  # answered either way, never hung
        deadline = time.monotonic() + 60  # restarted: ready again, nothing lost
        while httpx.get(f"{srv.url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, httpx.get(f"{srv.url}/readyz").text
            time.sleep(0.2)
        assert store_process(srv.process.pid) != before
        assert httpx.get(big).json()["count"] == n
        hits = httpx.post(f"{big}/search", json={"query": {"vector": unit(3)}, "limit": 3})
        assert hits.status_code == 200 and len(hits.json()["results"]) == 3
        assert "restarting" in srv.output()

        # SIGTERM while the engine is stuck in such a call: the server still stops in seconds
        def slow() -> None:
            body = {"query": {"vector": unit(1)}, "filter": flt}
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{big}/search", json=body, timeout=60)

        caller = threading.Thread(target=slow)
        caller.start()
        stuck = store_process(srv.process.pid)
        time.sleep(0.5)
        start = time.perf_counter()
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(timeout=60) in (0, -signal.SIGTERM)
        stopped = time.perf_counter() - start
        caller.join()
        assert stopped < 15, stopped
        assert not alive(stuck)
