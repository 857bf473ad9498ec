"""`clipserve bench`: a closed-loop load generator against a running server.

Each of `concurrency` workers sends one request, waits for the answer, and sends the next, for a
duration or a request count. Throughput counts embedded items per second; latency is per request.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import platform
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from PIL import Image

WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "small",
    "large",
    "red",
    "blue",
    "number",
    "digit",
    "seven",
    "three",
    "dog",
    "cat",
    "house",
    "tree",
]


@dataclass
class BenchConfig:
    url: str = "http://127.0.0.1:8000"
    model: str | None = None
    modality: str = "text"  # text | image | mixed
    concurrency: int = 8
    batch: int = 1  # items per request
    duration_s: float = 10.0
    requests: int = 0  # if > 0, stop after this many instead of duration
    image_size: tuple[int, int] = (600, 400)
    image_format: str = "JPEG"
    transport: str = "json"  # json | multipart
    warmup_requests: int = 5
    encoding: str = "base64"  # float | base64
    path: str = "/v1/embeddings"  # peers may serve the OpenAI route elsewhere


@dataclass
class BenchResult:
    config: BenchConfig
    requests: int
    items: int
    errors: int
    seconds: float
    items_per_s: float
    requests_per_s: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)
    machine: dict[str, object] = field(default_factory=dict)


def _image_bytes(size: tuple[int, int], fmt: str, seed: int) -> bytes:
    """A photo-like image (smooth gradients + noise) so JPEG sizes resemble real photos."""
    rng = np.random.default_rng(seed)
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xs / w * 255, ys / h * 255, (xs + ys) / (w + h) * 255], axis=-1)
    arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, quality=90) if fmt == "JPEG" else Image.fromarray(arr).save(
        buf, fmt
    )
    return buf.getvalue()


def _payloads(cfg: BenchConfig, count: int = 16) -> list[list[dict[str, Any]]]:
    import base64

    rng = random.Random(0)
    out = []
    images = [_image_bytes(cfg.image_size, cfg.image_format, s) for s in range(count)]
    mime = f"image/{cfg.image_format.lower()}"
    for i in range(count):
        items: list[dict[str, Any]] = []
        for j in range(cfg.batch):
            kind = cfg.modality if cfg.modality != "mixed" else ("text", "image")[(i + j) % 2]
            if kind == "text":
                items.append({"text": " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))})
            else:
                blob = images[(i + j) % count]
                items.append(
                    {"image": f"data:{mime};base64,{base64.b64encode(blob).decode()}", "raw": blob}
                )
        out.append(items)
    return out


@dataclass
class _Request:
    path: str
    body: bytes | None  # pre-encoded JSON: the client spends no time encoding it
    files: list[bytes] | None = None  # multipart: a FormData is consumed by one request

    def data(self, model: str | None) -> Any:
        if self.files is None:
            return self.body
        form = aiohttp.FormData()
        if model:
            form.add_field("model", model)
        for i, blob in enumerate(self.files):
            form.add_field("files", blob, filename=f"{i}.jpg", content_type="image/jpeg")
        return form


def _request(cfg: BenchConfig, items: list[dict[str, Any]]) -> _Request:
    if cfg.transport == "multipart" and cfg.modality == "image":
        return _Request("/v1/embed/images", None, [it["raw"] for it in items])
    body: dict[str, Any] = {"encoding_format": cfg.encoding}
    if cfg.modality == "mixed":  # typed items: clipserve's own extension
        body["input"] = [{k: v for k, v in it.items() if k != "raw"} for it in items]
    else:  # plain strings + modality: what OpenAI-compatible peers (Infinity) accept too
        body["input"] = [it[cfg.modality] for it in items]
        body["modality"] = cfg.modality
    if cfg.model:
        body["model"] = cfg.model
    return _Request(cfg.path, json.dumps(body).encode())


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values) * 1000
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "mean": float(statistics.fmean(arr)),
        "max": float(arr.max()),
    }


def machine_info() -> dict[str, object]:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}


async def run_bench(cfg: BenchConfig) -> BenchResult:
    """aiohttp, not httpx: at high concurrency the load generator must cost far less CPU than
    the server it measures (they share the machine)."""
    requests = [_request(cfg, p) for p in _payloads(cfg)]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    done = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=cfg.concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(cfg.url, connector=connector, timeout=timeout) as session:

        async def send(i: int) -> int:
            request = requests[i % len(requests)]
            hdrs = headers if request.files is None else None
            async with session.post(
                request.path, data=request.data(cfg.model), headers=hdrs
            ) as resp:
                await resp.read()
                return resp.status

        for i in range(cfg.warmup_requests):
            await send(i)
        started = time.perf_counter()
        stop_at = started + cfg.duration_s

        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while True:
                if cfg.requests and done >= cfg.requests:
                    return
                if not cfg.requests and time.perf_counter() >= stop_at:
                    return
                done += 1
                t0 = time.perf_counter()
                status = await send(i)
                latencies.append(time.perf_counter() - t0)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                i += cfg.concurrency

        await asyncio.gather(*(worker(k) for k in range(cfg.concurrency)))
        seconds = time.perf_counter() - started
    ok = statuses.get("200", 0)
    return BenchResult(
        config=cfg,
        requests=len(latencies),
        items=ok * cfg.batch,
        errors=len(latencies) - ok,
        seconds=seconds,
        items_per_s=ok * cfg.batch / seconds,
        requests_per_s=len(latencies) / seconds,
        latency_ms=_percentiles(latencies),
        status_counts=statuses,
        machine=machine_info(),
    )


def format_row(r: BenchResult) -> str:
    lat = r.latency_ms
    c = r.config
    return (
        f"{c.modality:>6} {c.transport:>9} c={c.concurrency:<3} b={c.batch:<4} "
        f"{r.items_per_s:9.1f} items/s {r.requests_per_s:8.1f} req/s  "
        f"p50 {lat.get('p50', 0):7.1f} ms  p95 {lat.get('p95', 0):7.1f} ms  "
        f"p99 {lat.get('p99', 0):7.1f} ms  errors {r.errors}"
    )


def write_results(results: list[BenchResult], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in results], indent=2))
