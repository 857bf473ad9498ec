"""Embedded vector store candidates on N vectors: qdrant-client local mode vs Qdrant Edge.

    python benchmarks/store_embedded.py --n 100000 --dim 512

Prints upsert time, search and filtered-search latency (p50/p95 over 50 queries, top 10) and
re-open time for each engine, on disk in a temporary directory. Needs `pip install qdrant-edge-py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _lat(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> str:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return f"p50 {np.percentile(times, 50):8.2f} ms  p95 {np.percentile(times, 95):8.2f} ms"


def bench_local(path: Path, vectors: np.ndarray, queries: np.ndarray) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    client.create_collection(
        "bench",
        vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE),
    )
    t = time.perf_counter()
    for start in range(0, len(vectors), 1000):
        chunk = vectors[start : start + 1000]
        client.upsert(
            "bench",
            models.Batch(
                ids=list(range(start, start + len(chunk))),
                vectors=chunk.tolist(),
                payloads=[{"group": (start + i) % 100} for i in range(len(chunk))],
            ),
            wait=True,
        )
    print(f"local   upsert {len(vectors)}: {time.perf_counter() - t:8.1f} s", flush=True)
    flt = models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value=7))])
    print(
        "local   search   ",
        _lat(lambda q: client.query_points("bench", q.tolist(), limit=10), queries[:20]),
        flush=True,
    )
    print(
        "local   filtered ",
        _lat(
            lambda q: client.query_points("bench", q.tolist(), limit=10, query_filter=flt),
            queries[:20],
        ),
        flush=True,
    )
    client.close()
    t = time.perf_counter()
    client = QdrantClient(path=str(path))
    client.count("bench")
    print(f"local   reopen: {time.perf_counter() - t:8.2f} s", flush=True)
    client.close()


def bench_edge(path: Path, vectors: np.ndarray, queries: np.ndarray) -> None:
    import qdrant_edge as qe

    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=vectors.shape[1], distance=qe.Distance.Cosine)
    )
    shard = qe.EdgeShard.create(str(path), config)
    t = time.perf_counter()
    for start in range(0, len(vectors), 1000):
        chunk = vectors[start : start + 1000]
        points = [
            qe.Point(start + i, v.tolist(), {"group": (start + i) % 100})
            for i, v in enumerate(chunk)
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))
    shard.update(qe.UpdateOperation.create_field_index("group", qe.PayloadSchemaType.Integer))
    shard.flush()
    shard.optimize()
    print(
        f"edge    upsert {len(vectors)} (+index, optimize): {time.perf_counter() - t:8.1f} s",
        flush=True,
    )
    flt = qe.Filter(must=[qe.FieldCondition(key="group", match=qe.MatchValue(value=7))])

    def search(q: np.ndarray, f: object = None) -> object:
        return shard.query(
            qe.QueryRequest(
                limit=10, query=qe.Query.Nearest(q.tolist()), filter=f, with_payload=True
            )
        )

    print("edge    search   ", _lat(search, queries), flush=True)
    print("edge    filtered ", _lat(lambda q: search(q, flt), queries), flush=True)
    shard.close()
    t = time.perf_counter()
    shard = qe.EdgeShard.load(str(path))
    shard.count(qe.CountRequest(exact=True))
    print(f"edge    reopen: {time.perf_counter() - t:8.2f} s", flush=True)
    shard.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--engines", default="edge,local")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.n, 50, replace=False)] + 0.01
    print(f"{args.n} vectors x {args.dim} dims, cosine, on disk")
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines.split(","):
            {"edge": bench_edge, "local": bench_local}[engine](Path(tmp) / engine, vectors, queries)


if __name__ == "__main__":
    main()
