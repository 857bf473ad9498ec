"""Embedded store backend on Qdrant Edge (`qdrant-edge-py`): Qdrant's own engine in-process, one
shard per collection in `root/<name>/`.

- Durable when acknowledged: every update goes through the shard's write-ahead log, which is
  replayed when a shard is opened after a crash (flushing segments per request would cost
  ~80 ms; it happens on close instead).
- Every call runs on one worker thread: shards stay single-writer. The bindings hold the GIL
  while they work, so a serving process never hosts this backend itself: the store process
  does (`service.store.process`), and a slow call stalls only that process.
- Segments are searched by brute force in Rust (11 ms at 100k x 512 here). Building HNSW
  indexes (`EdgeShard.optimize`) holds the GIL for as long as it runs (214 s at that size), so
  the server never runs it; `clipserve store-optimize` does, with the server stopped.
- One process per data directory: `open` locks it (`.lock`), and the WAL is locked while a
  shard is open.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import shutil
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from service.store.filters import to_edge
from service.store.types import (
    CollectionOptions,
    Filter,
    Hit,
    IndexKind,
    OrderBy,
    Page,
    PointId,
    Recommend,
    ScrollQuery,
    SearchParams,
    SearchQuery,
    StoredPoint,
    StoreError,
    StoreUnavailable,
    WithPayload,
    hits,
    point_id,
    vector_of,
)

T = TypeVar("T")
_CONFIG = "edge_config.json"
_LOCK = ".lock"
_TRASH = ".trash-"
_DISTANCES = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot, "euclid": qe.Distance.Euclid}
_INDEX_KINDS = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "uuid": qe.PayloadSchemaType.Uuid,
    "datetime": qe.PayloadSchemaType.Datetime,
}
_FULL_SCAN_THRESHOLD_KB = 10_000  # Qdrant's default: below this a segment is scanned, not walked


def edge_config(dim: int, opts: CollectionOptions) -> qe.EdgeConfig:
    """Collection options in Edge terms (shards and replicas mean nothing in one process)."""
    quantization: Any = None
    if opts.quantization == "scalar":
        quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True)
    elif opts.quantization == "binary":
        quantization = qe.BinaryQuantizationConfig(always_ram=True)
    hnsw = None
    if opts.hnsw_m is not None or opts.hnsw_ef_construct is not None:
        hnsw = qe.HnswIndexConfig(
            m=opts.hnsw_m or 16,
            ef_construct=opts.hnsw_ef_construct or 100,
            full_scan_threshold=_FULL_SCAN_THRESHOLD_KB,
        )
    vectors = qe.EdgeVectorParams(
        size=dim, distance=_DISTANCES[opts.distance], on_disk=True if opts.on_disk else None
    )
    return qe.EdgeConfig(vectors=vectors, hnsw_config=hnsw, quantization_config=quantization)


def _with_payload(w: WithPayload) -> Any:
    if isinstance(w, models.PayloadSelectorInclude):
        return qe.PayloadSelector.Include(list(w.include))
    if isinstance(w, models.PayloadSelectorExclude):
        return qe.PayloadSelector.Exclude(list(w.exclude))
    return w  # True / False / a list of keys


def _params(p: SearchParams | None) -> qe.SearchParams | None:
    if p is None:
        return None
    q, acorn = p.quantization, p.acorn
    return qe.SearchParams(
        hnsw_ef=p.hnsw_ef,
        exact=bool(p.exact),
        quantization=None
        if q is None
        else qe.QuantizationSearchParams(
            ignore=bool(q.ignore), rescore=q.rescore, oversampling=q.oversampling
        ),
        indexed_only=bool(p.indexed_only),
        acorn=None
        if acorn is None
        else qe.AcornSearchParams(enable=bool(acorn.enable), max_selectivity=acorn.max_selectivity),
    )


def _query(v: list[float] | Recommend) -> Any:
    """Edge has best_score and sum_scores; `average_vector` is a search near Qdrant's average."""
    if not isinstance(v, Recommend):
        return qe.Query.Nearest(v)
    if v.strategy == "average_vector":
        return qe.Query.Nearest(v.average())
    examples = qe.RecommendQuery(list(v.positive), list(v.negative))
    if v.strategy == "best_score":
        return qe.Query.RecommendBestScore(examples)
    return qe.Query.RecommendSumScores(examples)


def _request(q: SearchQuery) -> qe.QueryRequest:
    return qe.QueryRequest(
        limit=q.limit,
        offset=q.offset,
        query=_query(q.vector),
        filter=to_edge(q.filter, q.exclude),
        score_threshold=q.score_threshold,
        params=_params(q.params),
        with_payload=_with_payload(q.with_payload),
        with_vector=q.with_vectors,
    )


def _order_by(o: OrderBy) -> qe.OrderBy:
    start: Any = o.start_from
    if isinstance(start, dt.date):  # a datetime key's bound, as RFC 3339 (naive: UTC)
        if not isinstance(start, dt.datetime):
            start = dt.datetime.combine(start, dt.time())
        start = (start if start.tzinfo else start.replace(tzinfo=dt.UTC)).isoformat()
    desc = o.direction == models.Direction.DESC
    return qe.OrderBy(o.key, qe.Direction.Desc if desc else qe.Direction.Asc, start)


class EdgeBackend:
    mode = "embedded"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._shards: dict[str, qe.EdgeShard] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-edge")
        self._open = False
        self._lock: IO[str] | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args))

    def _path(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"bad collection name {name!r}")
        return self.root / name

    def _shard(self, name: str) -> qe.EdgeShard:
        """The open shard (opened on first use; worker thread only)."""
        shard = self._shards.get(name)
        if shard is None:
            path = self._path(name)
            if not (path / _CONFIG).is_file():  # e.g. dropped while a request was on its way
                raise StoreError(404, "collection_not_found", f"collection {name!r} does not exist")
            shard = qe.EdgeShard.load(str(path))
            self._shards[name] = shard
        return shard

    # --- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Takes the directory's lock first: one process owns it (the WAL locks only the shards
        opened so far, so two processes could otherwise share a directory unnoticed)."""

        def start() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = (self.root / _LOCK).open("a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise StoreUnavailable(
                    f"{self.root} is in use by another process (one store process per data "
                    "directory; a server's workers share it)"
                ) from None
            self._lock = lock
            for leftover in self.root.glob(_TRASH + "*"):  # a drop interrupted by a crash
                shutil.rmtree(leftover, ignore_errors=True)

        await self._run(start)
        self._open = True

    async def close(self) -> None:
        def stop() -> None:
            for shard in self._shards.values():
                shard.close()  # flushes segments
            self._shards.clear()
            if self._lock is not None:
                self._lock.close()  # releases the lock
                self._lock = None

        self._open = False
        await self._run(stop)
        self._pool.shutdown(wait=True)

    async def health(self) -> str | None:
        return None if self._open else "the embedded store is closed"

    # --- collections --------------------------------------------------------------------------
    async def exists(self, name: str) -> bool:
        return name in self._shards or (self._path(name) / _CONFIG).is_file()

    async def dimension(self, name: str) -> int:
        config = json.loads((self._path(name) / _CONFIG).read_text())
        return int(config["vectors"][""]["size"])

    async def create(self, name: str, dim: int, opts: CollectionOptions) -> None:
        def make() -> None:
            path = self._path(name)
            if (path / _CONFIG).is_file():  # another API worker created it a moment ago
                raise StoreError(409, "collection_exists", f"collection {name!r} exists")
            if path.exists():
                shutil.rmtree(path)  # a create interrupted by a crash
            shard = qe.EdgeShard.create(str(path), edge_config(dim, opts))
            self._shards[name] = shard
            for key, kind in opts.payload_indexes.items():
                shard.update(qe.UpdateOperation.create_field_index(key, _INDEX_KINDS[kind]))

        await self._run(make)

    async def index_payload(self, name: str, key: str, kind: IndexKind) -> None:
        """Indexes what is stored now (holding the GIL while it runs) and keeps up after."""
        op = qe.UpdateOperation.create_field_index(key, _INDEX_KINDS[kind])
        await self._run(lambda: self._shard(name).update(op))

    async def drop(self, name: str) -> None:
        def remove() -> None:
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            trash = self.root / f"{_TRASH}{uuid.uuid4().hex}"
            self._path(name).rename(trash)  # gone in one step, even if rmtree is interrupted
            shutil.rmtree(trash, ignore_errors=True)

        await self._run(remove)

    # --- points -------------------------------------------------------------------------------
    async def upsert(
        self,
        name: str,
        ids: Sequence[PointId],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        points = [
            qe.Point(i, v, p) for i, v, p in zip(ids, vectors.tolist(), payloads, strict=True)
        ]
        op = qe.UpdateOperation.upsert_points(points)
        await self._run(lambda: self._shard(name).update(op))

    async def retrieve(
        self, name: str, ids: Sequence[PointId], with_payload: bool, with_vectors: bool
    ) -> list[StoredPoint]:
        def get() -> list[StoredPoint]:
            found = self._shard(name).retrieve(list(ids), with_payload, with_vectors)
            return [
                StoredPoint(
                    point_id(r.id), r.payload if with_payload else None, vector_of(r.vector)
                )
                for r in found
            ]

        return await self._run(get)

    async def delete(self, name: str, ids: Sequence[PointId] | None, flt: Filter | None) -> None:
        if ids is not None:
            op = qe.UpdateOperation.delete_points(list(ids))
        else:
            op = qe.UpdateOperation.delete_points_by_filter(to_edge(flt or Filter()))
        await self._run(lambda: self._shard(name).update(op))

    async def set_payload(
        self,
        name: str,
        ids: Sequence[PointId] | None,
        flt: Filter | None,
        payload: dict[str, Any],
        overwrite: bool,
    ) -> None:
        update = qe.UpdateOperation
        if ids is not None:
            by_id = update.overwrite_payload if overwrite else update.set_payload
            op = by_id(list(ids), payload)
        else:
            by_filter = (
                update.overwrite_payload_by_filter if overwrite else update.set_payload_by_filter
            )
            op = by_filter(to_edge(flt or Filter()), payload)
        await self._run(lambda: self._shard(name).update(op))

    async def delete_payload(
        self, name: str, ids: Sequence[PointId] | None, flt: Filter | None, keys: Sequence[str]
    ) -> None:
        if ids is not None:
            op = qe.UpdateOperation.delete_payload(list(ids), list(keys))
        else:
            op = qe.UpdateOperation.delete_payload_by_filter(to_edge(flt or Filter()), list(keys))
        await self._run(lambda: self._shard(name).update(op))

    async def query(self, name: str, q: SearchQuery) -> list[Hit]:
        request = _request(q)
        return await self._run(lambda: hits(self._shard(name).query(request), q))

    async def query_batch(self, name: str, qs: Sequence[SearchQuery]) -> list[list[Hit]]:
        """One planned batch: the searches share one pass over the segments."""
        batch = qe.QueryBatchRequest([_request(q) for q in qs])

        def run() -> list[list[Hit]]:
            found = self._shard(name).query_batch(batch)
            return [hits(points, q) for points, q in zip(found, qs, strict=True)]

        return await self._run(run)

    async def count(self, name: str, flt: Filter | None = None, exact: bool = True) -> int:
        request = qe.CountRequest(exact=exact, filter=to_edge(flt))
        return await self._run(lambda: self._shard(name).count(request))

    async def scroll(self, name: str, q: ScrollQuery) -> Page:
        request = qe.ScrollRequest(
            offset=q.offset,
            limit=q.limit,
            filter=to_edge(q.filter),
            with_payload=_with_payload(q.with_payload),
            with_vector=q.with_vectors,
            order_by=None if q.order_by is None else _order_by(q.order_by),
        )

        def run() -> Page:
            records, after = self._shard(name).scroll(request)
            points = [
                StoredPoint(
                    point_id(r.id),
                    r.payload if q.with_payload is not False else None,
                    vector_of(r.vector),
                    r.order_value,
                )
                for r in records
            ]
            return Page(points, None if after is None else point_id(after))

        return await self._run(run)

    # --- maintenance (offline) ----------------------------------------------------------------
    async def optimize(self, name: str) -> bool:
        """Vacuum deleted points, merge segments, build the HNSW index (holds the GIL)."""
        return await self._run(lambda: bool(self._shard(name).optimize()))

    async def names(self) -> list[str]:
        found = (p.parent.name for p in self.root.glob(f"*/{_CONFIG}"))
        return sorted(n for n in found if not n.startswith("."))
