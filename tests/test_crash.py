"""Durability: SIGKILL the server in the middle of a bulk ingest, with a poisoned payload (one
Qdrant Edge could not read back) attempted among the batches; after a restart every point whose
upsert was acknowledged is there, with its payload, and the collection answers filters."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.server import run_server


@pytest.mark.slow
def test_acknowledged_points_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL, "--data-dir", str(data)]
    acknowledged: list[int] = []
    refused: list[int] = []
    with run_server(tmp_path, *args) as srv:
        assert httpx.put(f"{srv.url}/v1/collections/ingest").status_code == 201
        stop = threading.Event()

        def ingest() -> None:
            batch = 0
            while not stop.is_set():
                ids = list(range(batch * 20, batch * 20 + 20))
                items = [{"id": i, "text": f"number {i % 10}", "payload": {"i": i}} for i in ids]
                if batch == 5:  # 200 levels deep: once acknowledged, it poisoned the collection
                    items[7]["payload"] = _nested(200)
                try:
                    r = httpx.post(
                        f"{srv.url}/v1/collections/ingest/points", json={"items": items}, timeout=10
                    )
                except httpx.HTTPError:
                    return  # the server died under us: this batch was never acknowledged
                if r.status_code == 200:
                    acknowledged.extend(ids)
                elif batch == 5:
                    assert r.status_code == 422, r.text
                    refused.extend(ids)
                batch += 1

        worker = threading.Thread(target=ingest)
        worker.start()
        while len(acknowledged) < 200:
            assert worker.is_alive()
            threading.Event().wait(0.01)
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait(timeout=10)
        stop.set()
        worker.join(timeout=30)
    with run_server(tmp_path, *args) as again:
        count = httpx.get(f"{again.url}/v1/collections/ingest").json()["count"]
        assert count >= len(acknowledged)
        exists = httpx.post(
            f"{again.url}/v1/collections/ingest/points/exists", json={"ids": acknowledged}
        ).json()["ids"]
        assert sorted(exists) == sorted(acknowledged)
        last = acknowledged[-1]
        point = httpx.get(f"{again.url}/v1/collections/ingest/points/{last}").json()
        assert point["payload"] == {"i": last}
        assert refused and not set(refused) & set(acknowledged)
        gone = httpx.post(
            f"{again.url}/v1/collections/ingest/points/exists", json={"ids": refused}
        ).json()["ids"]
        assert gone == []  # all or nothing: the poisoned batch wrote none of its points
        flt = {"must": [{"key": "i", "range": {"gte": 120, "lt": 125}}]}
        search = {"query": {"text": "number 3"}, "filter": flt, "limit": 10}
        hits = httpx.post(f"{again.url}/v1/collections/ingest/search", json=search).json()
        assert sorted(h["id"] for h in hits["results"]) == [120, 121, 122, 123, 124]


def _nested(depth: int) -> dict[str, object]:
    payload: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        payload = {"a": payload}
    return payload
