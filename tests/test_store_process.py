"""The embedded engine's store process, as a server runs it: a store process that dies is
noticed (not ready, 503s naming the store, never a 500) and started again with every point
there; SIGTERM stops it cleanly (shards flushed, counts recorded for the next start-up check)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.server import run_server
from tests.watch import alive, store_process

pytestmark = pytest.mark.slow
ARGS = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL]
DIM = 64


def fill(url: str, n: int) -> None:
    assert httpx.put(url, json={}).status_code == 201
    items = [
        {"id": i, "vector": [float(i == d) for d in range(DIM)], "payload": {"i": i}}
        for i in range(n)
    ]
    assert httpx.post(f"{url}/points", json={"items": items}).status_code == 200


def test_a_dead_store_process_is_noticed_and_restarted(tmp_path: Path) -> None:
    with run_server(tmp_path, *ARGS, "--data-dir", str(tmp_path / "data")) as srv:
        url = f"{srv.url}/v1/collections/c"
        fill(url, 50)
        first = store_process(srv.process.pid)
        statuses: set[int] = set()
        not_ready: list[dict[str, object]] = []
        stop = threading.Event()

        def use() -> None:
            while not stop.is_set():
                search = {"query": {"vector": [1.0] * DIM}, "limit": 3}
                r = httpx.post(f"{url}/search", json=search, timeout=30)
                statuses.add(r.status_code)
                if r.status_code != 200:
                    assert r.json()["error"]["code"] == "store_unavailable", r.text
                ready = httpx.get(f"{srv.url}/readyz", timeout=30)
                if ready.status_code == 503:
                    not_ready.append(ready.json())

        user = threading.Thread(target=use)
        user.start()
        time.sleep(0.3)
        os.kill(first, signal.SIGKILL)
        second = store_process(srv.process.pid)
        deadline = time.monotonic() + 30
        while second == first or not_ready == [] or 200 not in statuses:
            assert time.monotonic() < deadline, (statuses, not_ready)
            second = store_process(srv.process.pid)
            time.sleep(0.05)
        while httpx.get(f"{srv.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, not_ready
            time.sleep(0.05)
        stop.set()
        user.join()
        assert statuses <= {200, 503}, statuses
        reasons = [str(r["reasons"]) for r in not_ready]
        assert any("the store process is restarting" in r for r in reasons), reasons
        assert httpx.get(url).json()["count"] == 50
        assert httpx.get(f"{url}/points/49").json()["payload"] == {"i": 49}
        assert "the store process is restarting: it exited with code -9" in srv.output()


def test_sigterm_stops_the_store_process_cleanly_and_records_the_counts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with run_server(tmp_path, *ARGS, "--data-dir", str(data)) as srv:
        fill(f"{srv.url}/v1/collections/c", 30)
        store = store_process(srv.process.pid)
        start = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(timeout=30) in (0, -signal.SIGTERM)
        took = time.monotonic() - start
        assert not alive(store)
    assert took < 10, took
    assert "stopped cleanly" in srv.output()
    state = json.loads((data / "edge" / "clipserve-state.json").read_text())
    assert state["clean"] is True and state["counts"]["c"] == 30
