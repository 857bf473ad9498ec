"""Embedded store engines on N vectors, through clipserve's own store code: Qdrant Edge
(`qdrant-edge-py`, the default) vs qdrant-client's local mode, in this process, and Edge in the
store process over its socket (`process`: what a server runs; the difference is the cost of
the socket and pickling per call).

    python benchmarks/store_embedded.py --n 100000 --dim 512            # both engines
    python benchmarks/store_embedded.py --n 20000 --engines edge,process  # in-process vs process
    python benchmarks/store_embedded.py --n 100000 --engines edge --hnsw  # + HNSW build

For each engine, on disk in a temporary directory: upsert time (batches of 256, each answered
once stored), search and filtered-search latency (p50/p95, top 10, filter keeps 1% of points;
Edge also with a payload index on the filtered key), re-open time (open + first search) and disk
size. `--hnsw` also builds Edge's HNSW index
(`EdgeShard.optimize`, what `clipserve store-optimize` runs offline) and searches again.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from service.store.facade import Store
from service.store.factory import open_store
from service.store.filters import Filter, parse_filter
from service.store.owner import StoreProcess
from service.store.remote import RemoteBackend
from service.store.types import CollectionOptions, SearchQuery

BATCH = 256
GROUPS = 100


def _ms(times: list[float]) -> str:
    p50, p95 = np.percentile(times, [50, 95]) * 1000
    return f"p50 {p50:7.2f} ms  p95 {p95:7.2f} ms"


async def _latency(store: Store, queries: np.ndarray, flt: Filter | None) -> list[float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        hits = await store.search("bench", SearchQuery(vector=q.tolist(), filter=flt, limit=10))
        times.append(time.perf_counter() - t)
        assert hits
    return times


def _store(engine: str, root: Path) -> Store:
    if engine == "process":  # Edge in a store process, as a server runs it
        return Store(RemoteBackend("embedded", 600, owner=StoreProcess("edge", root, 600)))
    return open_store(engine, root, None, None)  # type: ignore[arg-type]


async def bench(
    engine: str, root: Path, vectors: np.ndarray, queries: np.ndarray, hnsw: bool
) -> None:
    name = f"{engine:<6}"
    flt = parse_filter({"must": [{"key": "group", "match": {"value": 7}}]})
    store = _store(engine, root)
    await store.open()
    await store.create_collection("bench", "m", vectors.shape[1], CollectionOptions())
    t = time.perf_counter()
    for start in range(0, len(vectors), BATCH):
        chunk = vectors[start : start + BATCH]
        ids = list(range(start, start + len(chunk)))
        await store.upsert("bench", ids, chunk, [{"group": i % GROUPS} for i in ids])
    print(f"{name} upsert {len(vectors)}: {time.perf_counter() - t:8.1f} s", flush=True)
    print(f"{name} search           {_ms(await _latency(store, queries, None))}", flush=True)
    print(f"{name} filtered search  {_ms(await _latency(store, queries, flt))}", flush=True)
    if engine != "local":  # local mode has no payload indexes
        t = time.perf_counter()
        await store.backend.index_payload("bench", "group", "integer")
        print(f"{name} payload index on group: {time.perf_counter() - t:8.1f} s")
        print(f"{name} filtered, indexed {_ms(await _latency(store, queries, flt))}", flush=True)
    if hnsw and engine == "edge":
        t = time.perf_counter()
        await store.backend.optimize("bench")  # type: ignore[attr-defined]
        print(f"{name} HNSW build (optimize, holds the GIL): {time.perf_counter() - t:8.1f} s")
        print(f"{name} search, HNSW     {_ms(await _latency(store, queries, None))}", flush=True)
        print(f"{name} filtered, HNSW   {_ms(await _latency(store, queries, flt))}", flush=True)
    await store.close()
    t = time.perf_counter()
    store = _store(engine, root)
    await store.open()
    await _latency(store, queries[:1], None)
    print(f"{name} reopen + first search: {time.perf_counter() - t:8.2f} s", flush=True)
    await store.close()
    size = subprocess.run(["du", "-sh", str(root)], capture_output=True, text=True).stdout.split()[
        0
    ]
    print(f"{name} on disk: {size}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--engines", default="edge,local")
    parser.add_argument("--hnsw", action="store_true", help="also build Edge's HNSW index")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.n, args.queries, replace=False)] + 0.01
    print(f"{args.n} vectors x {args.dim} dims, cosine, on disk, batches of {BATCH}", flush=True)
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(bench(engine, Path(tmp), vectors, queries, args.hnsw))


if __name__ == "__main__":
    main()
