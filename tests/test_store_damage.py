"""Damaged data directories: a real embedded store of 1,000 points, shut down cleanly, then one
of its files truncated or removed. A starting server checks every collection: a damaged one
makes /readyz not ready with the reason, answers 503 naming it on every call (never a 500),
is logged, and leaves the other collections serving; `clipserve store-check` reports it and
drops, resets or rebuilds it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.store.facade import Store
from service.store.owner import StoreProcess
from service.store.remote import RemoteBackend
from service.store.types import CollectionOptions
from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.server import REPO, Server, run_server

pytestmark = pytest.mark.slow
DIM, N = 64, 1000


def _truncate(file: Callable[[Path], Path], size: int) -> Callable[[Path], None]:
    return lambda shard: os.truncate(file(shard), size)


# collection -> (its damage, given the collection's directory; what the start-up check says,
# or None: nothing was lost and the collection serves)
DAMAGE: dict[str, tuple[Callable[[Path], None], str | None]] = {
    "wal_truncated": (_truncate(lambda c: c / "wal" / "open-1", 1000), None),
    "wal_emptied": (_truncate(lambda c: c / "wal" / "open-1", 0), "it cannot be opened"),
    "id_tracker_truncated": (
        _truncate(lambda c: _seg(c) / "mutable_id_tracker.mappings", 1300),
        "points, 1000 at the last clean shutdown",
    ),
    "vectors_truncated": (
        _truncate(lambda c: _seg(c) / "vector_storage" / "vectors" / "chunk_0.mmap", 4000),
        "its points cannot be read back",
    ),
    "payloads_truncated": (
        _truncate(lambda c: _seg(c) / "payload_storage" / "page_0.dat", 4000),
        "its points cannot be read back",
    ),
    "segment_removed": (lambda c: shutil.rmtree(_seg(c)), "1000 at the last clean shutdown"),
    "config_truncated": (
        _truncate(lambda c: c / "edge_config.json", 10),
        "it cannot be opened",
    ),
}


def _seg(shard: Path) -> Path:
    (segment,) = (shard / "segments").iterdir()
    return segment


async def _build(data: Path) -> None:
    """Through the store process, as a server writes it; its clean stop records the counts."""
    store = Store(RemoteBackend("embedded", 30, owner=StoreProcess("edge", data, 30)))
    await store.open()
    rng = np.random.default_rng(0)
    for name, n in [*((name, N) for name in DAMAGE), ("other", 10)]:
        await store.create_collection(name, DEFAULT_MODEL, DIM, CollectionOptions())
        vectors = rng.normal(size=(n, DIM)).astype(np.float32)
        for start in range(0, n, 250):
            ids = list(range(start, min(n, start + 250)))
            await store.upsert(name, ids, vectors[ids], [{"i": i} for i in ids])
    await store.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("pristine") / "data"
    asyncio.run(_build(data))
    return data


def damaged_copy(pristine: Path, tmp_path: Path, *names: str) -> Path:
    data = tmp_path / "data"
    # sparse, as the engine wrote them: its WAL and storage files are mostly holes (1.2 GB)
    subprocess.run(["cp", "-a", "--sparse=always", str(pristine), str(data)], check=True)
    for name in names:
        DAMAGE[name][0](data / "edge" / name)
    return data


def serve(tmp_path: Path, data: Path) -> AbstractContextManager[Server]:
    """A server on `data`, once it answers (a damaged store keeps it not ready)."""
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL, "--data-dir", str(data)]
    return run_server(tmp_path, *args, ready=False)


def store_check(data: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "service", "store-check", "--data-dir", str(data), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_damage_is_found_at_start_up(pristine: Path, tmp_path: Path) -> None:
    data = damaged_copy(pristine, tmp_path, *DAMAGE)
    with serve(tmp_path, data) as srv:
        ready = httpx.get(f"{srv.url}/readyz")
        assert ready.status_code == 503, ready.text
        reasons = ready.json()["reasons"]["store"]
        listed = httpx.get(f"{srv.url}/v1/collections").json()["collections"]
        assert sorted(listed) == sorted([*DAMAGE, "other"])
        other = httpx.get(f"{srv.url}/v1/collections/other")
        assert other.status_code == 200 and other.json()["count"] == 10
        for name, (_, reason) in DAMAGE.items():
            url = f"{srv.url}/v1/collections/{name}"
            if reason is None:  # the WAL matters only after a crash: the shards were flushed
                assert httpx.get(url).json()["count"] == N
                assert httpx.get(f"{url}/points/999").json()["payload"] == {"i": 999}
                assert f"collection {name!r}" not in reasons
                continue
            assert f"collection {name!r} is damaged: " in reasons, (name, reasons)
            said = reasons.split(f"collection {name!r} is damaged: ")[1].split(" (see")[0]
            assert reason in said, (name, said)
            assert f"collection {name!r} is damaged" in srv.output()
            vector = {"vector": [1.0] * DIM}
            for r in (
                httpx.get(url),
                httpx.post(f"{url}/search", json={"query": vector}),
                httpx.get(f"{url}/points/1"),
                httpx.post(f"{url}/points", json={"items": [{"id": 5000, **vector}]}),
            ):
                assert r.status_code == 503, (name, r.text)
                error = r.json()["error"]
                assert error["code"] == "collection_damaged", error
                assert repr(name) in error["message"] and "store-check" in error["message"]


def test_store_check_reports_and_rebuilds(pristine: Path, tmp_path: Path) -> None:
    name = "id_tracker_truncated"
    data = damaged_copy(pristine, tmp_path, name)
    report = store_check(data)
    assert report.returncode == 1, report.stdout + report.stderr
    found = re.search(rf"{name}: DAMAGED: it holds (\d+) points, 1000 at the last", report.stdout)
    assert found, report.stdout
    assert "other: ok, 10 points" in report.stdout
    left = int(found[1])
    rebuilt = store_check(data, "--rebuild", name)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"{name}: rebuilt with the {left} points that read back" in rebuilt.stdout
    assert store_check(data).returncode == 0  # whole now, and its new count is the expected one
    with serve(tmp_path, data) as srv:
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
        url = f"{srv.url}/v1/collections/{name}"
        info = httpx.get(url).json()
        assert info["count"] == left and info["model"] == DEFAULT_MODEL
        kept = httpx.post(f"{url}/points/exists", json={"ids": list(range(N))}).json()["ids"]
        assert len(kept) == left
        for pid in kept[:20]:
            assert httpx.get(f"{url}/points/{pid}").json()["payload"] == {"i": pid}


def test_store_check_resets_or_drops(pristine: Path, tmp_path: Path) -> None:
    data = damaged_copy(pristine, tmp_path, "vectors_truncated", "payloads_truncated")
    fixed = store_check(data, "--reset", "vectors_truncated", "--drop", "payloads_truncated")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "vectors_truncated: reset (empty, dimension 64)" in fixed.stdout
    assert "payloads_truncated: dropped" in fixed.stdout
    with serve(tmp_path, data) as srv:
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
        info = httpx.get(f"{srv.url}/v1/collections/vectors_truncated").json()
        assert info["count"] == 0 and info["model"] == DEFAULT_MODEL
        names = httpx.get(f"{srv.url}/v1/collections").json()["collections"]
        assert "payloads_truncated" not in names and "vectors_truncated" in names


def test_a_damaged_collection_can_be_deleted_through_the_api(
    pristine: Path, tmp_path: Path
) -> None:
    data = damaged_copy(pristine, tmp_path, "wal_emptied")
    with serve(tmp_path, data) as srv:
        url = f"{srv.url}/v1/collections/wal_emptied"
        assert httpx.get(f"{srv.url}/readyz").status_code == 503
        assert httpx.delete(url).status_code == 204
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
        assert httpx.put(url, json={}).status_code == 201


def test_store_check_needs_the_server_stopped(pristine: Path, tmp_path: Path) -> None:
    data = damaged_copy(pristine, tmp_path)
    with serve(tmp_path, data):
        busy = store_check(data)
    assert busy.returncode == 2 and "in use by another process" in busy.stderr, busy.stderr
