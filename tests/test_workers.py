"""Several worker processes (`--workers`): they share the port, give the single process's
embeddings, report one set of metrics, share one embedded store process, and stop together."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.images import data_uri, encode, noise
from tests.server import REPO, run_server

pytestmark = pytest.mark.slow


def _embed(url: str, body: dict[str, object]) -> np.ndarray:
    r = httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]])


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_two_workers_serve_the_same_embeddings(model_dir: Path, tmp_path: Path) -> None:
    base = ["--models-dir", str(model_dir.parent), "--models", model_dir.name]
    texts = {"input": ["seven", "a photo of the number 3"]}
    images = {"input": [data_uri(encode(noise(90, 60, seed=s), "PNG")) for s in range(3)]}
    images["modality"] = "image"  # type: ignore[assignment]
    with run_server(tmp_path, *base) as one:
        ref_text, ref_image = _embed(one.url, texts), _embed(one.url, images)
    with run_server(tmp_path, *base, "--workers", "2", "--store-engine", "none") as srv:
        workers = [p for p in _children(srv.process.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2, workers
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: _embed(srv.url, texts), range(40)))
        for g in got:
            assert np.min(np.sum(g * ref_text, axis=1)) >= 0.9999
        assert np.min(np.sum(_embed(srv.url, images) * ref_image, axis=1)) >= 0.9999
        # one worker's /metrics counts every worker's requests (prometheus multiprocess mode)
        for _ in range(4):
            scraped = httpx.get(f"{srv.url}/metrics").text
            assert _metric(scraped, 'clipserve_items_total{model="mnist-clip",tower="text"}') >= 80
        # no store: listing is empty, writes are refused as disabled
        assert httpx.get(f"{srv.url}/v1/collections").json() == {"collections": []}
        put = httpx.put(f"{srv.url}/v1/collections/docs", json={})
        assert put.status_code == 501 and put.json()["error"]["code"] == "store_disabled"
        srv.process.terminate()
        assert srv.process.wait(timeout=30) == 0
    assert not any(_alive(p) for p in workers)


def test_two_workers_share_one_embedded_store(model_dir: Path, tmp_path: Path) -> None:
    base = ["--models-dir", str(model_dir.parent), "--models", model_dir.name]
    data = tmp_path / "data"
    with run_server(tmp_path, *base, "--workers", "2", "--data-dir", str(data)) as srv:
        everyone = _children(srv.process.pid)
        stores = [p for p in everyone if "service.store.process" in _cmdline(p)]
        assert len(stores) == 1, [_cmdline(p) for p in everyone]
        workers = [p for p in everyone if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2
        url = f"{srv.url}/v1/collections/shared"
        with ThreadPoolExecutor(4) as pool:  # racing PUTs from both workers: one creates it
            puts = list(
                pool.map(lambda _: httpx.put(url, json={}, timeout=60).status_code, range(4))
            )
        assert sorted(puts) == [200, 200, 200, 201], puts

        def upsert(batch: int) -> int:
            items = [
                {"id": batch * 10 + i, "text": f"number {i}", "payload": {"batch": batch}}
                for i in range(10)
            ]
            return httpx.post(f"{url}/points", json={"items": items}, timeout=60).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(upsert, range(40))) == {200}
        for _ in range(8):  # whichever worker answers sees every point
            assert httpx.get(url).json()["count"] == 400
        search = {
            "query": {"text": "number 7"},
            "limit": 5,
            "filter": {"must": [{"key": "batch", "match": {"value": 3}}]},
        }
        hits = httpx.post(f"{url}/search", json=search, timeout=60).json()["results"]
        assert hits and all(h["payload"] == {"batch": 3} for h in hits)
        labels = {"labels": ["zero", "one", "seven"]}
        assert (
            httpx.put(f"{srv.url}/v1/label-sets/digits", json=labels, timeout=60).status_code == 200
        )
        for _ in range(4):
            got = httpx.get(f"{srv.url}/v1/label-sets/digits", params={"with_labels": True})
            assert got.json()["labels"] == labels["labels"]
        srv.process.terminate()
        assert srv.process.wait(timeout=30) == 0
    assert not any(_alive(p) for p in workers + stores)
    with run_server(tmp_path, *base, "--data-dir", str(data)) as again:  # all of it was stored
        assert httpx.get(f"{again.url}/v1/collections/shared").json()["count"] == 400


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "service", "serve", "--port", "0", "--workers", "2"]
    cmd += ["--data-dir", str(tmp_path / "data"), "--models-dir", str(tmp_path)]
    broken = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert broken.returncode == 2, broken.stderr
    assert "no model folders" in broken.stderr.splitlines()[-1]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
