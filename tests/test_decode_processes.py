"""Decoding in worker processes (for many-core hosts) gives the same embeddings and errors as
threads, and a killed decode worker is replaced without taking the server down."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.images import data_uri, encode, noise
from tests.server import Server, run_server

IMAGES = [data_uri(encode(noise(120, 90, seed=i), "JPEG")) for i in range(6)]


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("procs")
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL, "--decode-processes", "2"]
    with run_server(tmp, *args) as srv:
        yield srv


def embed(url: str, inputs: list[str]) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json={"input": inputs, "modality": "image"})


def test_same_embeddings_and_errors_as_threads(procs: Server, server: Server) -> None:
    a = np.array([d["embedding"] for d in embed(procs.url, IMAGES).json()["data"]])
    b = np.array([d["embedding"] for d in embed(server.url, IMAGES).json()["data"]])
    np.testing.assert_allclose(a, b, atol=1e-6)
    bad = embed(procs.url, [IMAGES[0], "%%", data_uri(b"junk")])
    assert bad.status_code == 422
    assert [(i["index"], i["code"]) for i in bad.json()["error"]["items"]] == [
        (1, "invalid_image"),
        (2, "invalid_image"),
    ]


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += [int(child), *_descendants(int(child))]
    return out


@pytest.mark.slow
def test_a_killed_decode_worker_is_replaced(procs: Server) -> None:
    assert embed(procs.url, IMAGES[:2]).status_code == 200  # workers are up
    helpers = _descendants(procs.process.pid)  # forkserver, resource tracker, decode workers
    assert len(helpers) >= 3
    for pid in helpers:
        os.kill(pid, signal.SIGKILL)
    statuses = [embed(procs.url, IMAGES[:2]).status_code for _ in range(4)]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[-1] == 200, statuses  # a new pool took over
    assert httpx.get(f"{procs.url}/healthz").status_code == 200
