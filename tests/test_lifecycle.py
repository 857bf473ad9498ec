"""Shutdown and overload: SIGTERM drains in-flight work; floods get 429s, no 5xx, bounded memory."""

from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.images import data_uri, encode, noise
from tests.server import peak_rss_mb, run_server

ARGS = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL]


@pytest.mark.slow
def test_sigterm_completes_in_flight_requests(tmp_path: Path) -> None:
    images = [data_uri(encode(noise(1600, 1200, i), "JPEG", quality=95)) for i in range(12)]
    body = {"input": images, "modality": "image"}
    with run_server(tmp_path, *ARGS, "--decode-threads", "1") as srv:

        def call(_: int) -> int:
            return httpx.post(f"{srv.url}/v1/embeddings", json=body, timeout=60).status_code

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(call, i) for i in range(6)]
            deadline = time.monotonic() + 20
            while _in_flight(srv.url) < 6 + 1 and time.monotonic() < deadline:  # +1: this scrape
                time.sleep(0.02)
            srv.process.send_signal(signal.SIGTERM)
            statuses = [f.result() for f in futures]
        assert statuses == [200] * 6
        # uvicorn re-raises the signal after a clean shutdown, so the status is SIGTERM's
        assert srv.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in srv.output()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv.url}/healthz", timeout=2)


def _in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    match = re.search(r"^clipserve_requests_in_flight (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


MEMORY_BOUND_MB = 1200


@pytest.mark.slow
def test_flood_gets_429_never_5xx_and_memory_stays_bounded(tmp_path: Path) -> None:
    """200 concurrent requests of 8 images each against a queue of 64 items."""
    blob = data_uri(encode(noise(1024, 768, 1), "JPEG", quality=95))
    body = {"input": [blob] * 8, "modality": "image"}
    small = ["--max-queue-items", "64", "--max-batch-size", "16", "--request-timeout-s", "20"]
    with run_server(tmp_path, *ARGS, *small) as srv:
        with ThreadPoolExecutor(64) as pool:
            responses = list(
                pool.map(
                    lambda _: httpx.post(f"{srv.url}/v1/embeddings", json=body, timeout=60),
                    range(200),
                )
            )
        statuses = [r.status_code for r in responses]
        assert all(s < 500 for s in statuses), sorted(set(statuses))
        assert statuses.count(429) > 0 and statuses.count(200) > 0
        assert all(r.headers.get("retry-after") for r in responses if r.status_code == 429)
        peak = peak_rss_mb(srv.process.pid)
        assert peak < MEMORY_BOUND_MB, f"peak RSS {peak:.0f} MB"
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
