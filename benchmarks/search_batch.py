"""16 text queries as one `search/batch` call against 16 `search` calls, over HTTP on a running
server (its default model):

    clipserve serve &
    python benchmarks/search_batch.py --points 10000 --rounds 200

Fills a collection with `--points` random unit vectors, then asks the same groups of 16 text
queries three ways, `--clients` groups at a time (closed loop):
- batch: one POST .../search/batch of 16 searches (texts embedded in one batch, one engine call);
- sequential: 16 POST .../search, one after another (what a naive client does);
- concurrent: 16 POST .../search at once (the server's dynamic batcher may merge the texts).
For each it prints queries/s and the latency of a whole group of 16 (p50 / p95 / p99), and the
machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np

GROUP = 16
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def texts(round_: int) -> list[str]:
    """A different group of 16 queries each round (nothing can be served from a cache)."""
    return [
        f"a photo of the number {WORDS[(round_ + i) % 10]} {WORDS[(round_ * 7 + i) % 10]}"
        for i in range(GROUP)
    ]


async def fill(client: httpx.AsyncClient, url: str, points: int) -> None:
    r = await client.put(url, json={})
    r.raise_for_status()
    dim = int((await client.get(url)).json()["dimension"])
    rng = np.random.default_rng(0)
    for start in range(0, points, 1000):
        n = min(1000, points - start)
        v = rng.normal(size=(n, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        items = [{"id": start + i, "vector": v[i].tolist()} for i in range(n)]
        (await client.post(f"{url}/points", json={"items": items}, timeout=120)).raise_for_status()


def search_body(text: str) -> dict[str, object]:
    return {"query": {"text": text}, "limit": 10, "with_payload": False}


async def batch(client: httpx.AsyncClient, url: str, group: list[str]) -> None:
    body = {"searches": [search_body(t) for t in group]}
    r = await client.post(f"{url}/search/batch", json=body)
    r.raise_for_status()
    assert len(r.json()["results"]) == GROUP


async def sequential(client: httpx.AsyncClient, url: str, group: list[str]) -> None:
    for text in group:
        (await client.post(f"{url}/search", json=search_body(text))).raise_for_status()


async def concurrent(client: httpx.AsyncClient, url: str, group: list[str]) -> None:
    answers = await asyncio.gather(
        *(client.post(f"{url}/search", json=search_body(t)) for t in group)
    )
    for r in answers:
        r.raise_for_status()


Way = Callable[[httpx.AsyncClient, str, list[str]], Awaitable[None]]


async def measure(
    client: httpx.AsyncClient, url: str, way: Way, rounds: int, clients: int
) -> tuple[float, list[float]]:
    """(seconds in all, latency of each group)."""
    latencies: list[float] = []
    todo = iter(range(rounds))

    async def worker() -> None:
        for round_ in todo:
            start = time.perf_counter()
            await way(client, url, texts(round_))
            latencies.append(time.perf_counter() - start)

    for round_ in range(3):  # warm-up
        await way(client, url, texts(-1 - round_))
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - start, latencies


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return f"{names[0] if names else platform.processor() or '?'}, {os.cpu_count()} CPUs"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("CLIPSERVE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--collection", default="bench-search-batch")
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200, help="groups of 16 queries per way")
    parser.add_argument("--clients", type=int, default=1, help="groups in flight at once")
    parser.add_argument("--keep", action="store_true", help="keep the collection afterwards")
    args = parser.parse_args()
    url = f"{args.url}/v1/collections/{args.collection}"
    limits = httpx.Limits(max_connections=args.clients * GROUP)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await client.delete(url)
        await fill(client, url, args.points)
        model = (await client.get(url)).json()["model"]
        print(
            f"{args.points} points, model {model}, {args.rounds} groups of {GROUP} text "
            f"queries (top 10), {args.clients} client(s); {machine()}"
        )
        for name, way in (("batch", batch), ("sequential", sequential), ("concurrent", concurrent)):
            took, latencies = await measure(client, url, way, args.rounds, args.clients)
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
            rate = args.rounds * GROUP / took
            print(
                f"{name:>10}: {rate:7.0f} queries/s   16 queries: "
                f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms"
            )
        if not args.keep:
            await client.delete(url)


if __name__ == "__main__":
    asyncio.run(main())
