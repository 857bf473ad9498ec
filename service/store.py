"""The vector store: collections bound to a model, points, search, label sets.

Two engines behind one small `Backend` interface (same Qdrant semantics, filters and ids):
- embedded (default): Qdrant's own engine in-process (`qdrant-edge`), one shard per collection
  under `data_dir/edge`. `benchmarks/store_embedded.py` chose it over qdrant-client's local mode:
  at 100k x 512 it upserts in 3 s instead of 2 minutes, searches in 11 ms instead of 125,
  filters in 0.24 ms (payload index) instead of 1.3 s, and its WAL survives a crash;
- a Qdrant server or cluster by URL through `qdrant-client` (the same client also runs its local
  mode, `store_engine=local`, which the tests use to exercise that code path without a server).

What clipserve adds on top (which model a collection belongs to, label sets) lives in Qdrant
too, in a small system collection, so a restart or a second replica sees the same state.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from service.filters import Condition, PayloadFilter

log = logging.getLogger(__name__)

SYSTEM = "_clipserve"  # system collection: one point per user collection / label set
_SYSTEM_NS = uuid.UUID("6c1f3a52-4d38-4f0e-9d43-0d8f7e3b9a10")
LABELS_PREFIX = "_labels_"

PointId = int | str
Distance = Literal["cosine", "dot", "euclid"]
IndexKind = Literal["keyword", "integer", "float", "bool", "uuid"]


class StoreError(Exception):
    """A store problem the client caused (unknown collection, conflict): status + code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class StoreUnavailable(RuntimeError):
    """The store cannot be opened (server unreachable, data directory locked or damaged)."""


@dataclass
class CollectionOptions:
    distance: Distance = "cosine"
    on_disk: bool = False
    hnsw_m: int | None = None
    hnsw_ef_construct: int | None = None
    quantization: Literal["none", "scalar", "binary"] = "none"
    shard_number: int | None = None
    replication_factor: int | None = None
    # payload key -> keyword | integer | float | bool | uuid: filters on it use an index
    payload_indexes: dict[str, IndexKind] = field(default_factory=dict)
    # a JPEG thumbnail of each upserted image, at most this many pixels a side (None: none)
    thumbnail_size: int | None = None


@dataclass
class CollectionInfo:
    name: str
    model: str
    dimension: int
    count: int | None
    options: CollectionOptions


@dataclass
class Point:
    id: PointId
    vector: list[float]
    payload: dict[str, Any]


@dataclass
class StoredPoint:
    id: PointId
    payload: dict[str, Any] | None
    vector: list[float] | None = None


@dataclass
class Hit:
    id: PointId
    score: float
    payload: dict[str, Any] | None
    vector: list[float] | None = None


@dataclass
class SearchQuery:
    vector: list[float]
    filter: PayloadFilter | None = None
    exclude: Sequence[PointId] = ()
    limit: int = 10
    offset: int = 0
    score_threshold: float | None = None
    with_payload: bool = True
    with_vectors: bool = False


@dataclass
class LabelSet:
    name: str
    model: str
    labels: list[str]
    templates: list[str]
    prototypes: np.ndarray = field(repr=False)


class Backend(Protocol):
    """The few Qdrant operations clipserve needs; every write returns once it is stored."""

    mode: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool: ...
    async def exists(self, name: str) -> bool: ...
    async def dimension(self, name: str) -> int: ...
    async def create(self, name: str, dim: int, opts: CollectionOptions) -> None: ...
    async def drop(self, name: str) -> None: ...
    async def index_payload(self, name: str, key: str, kind: IndexKind) -> None: ...
    async def names(self) -> list[str]: ...
    async def upsert(self, name: str, points: Sequence[Point]) -> None: ...
    async def retrieve(
        self, name: str, ids: Sequence[PointId], with_payload: bool, with_vectors: bool
    ) -> list[StoredPoint]: ...
    async def delete(
        self, name: str, ids: Sequence[PointId] | None, flt: PayloadFilter | None
    ) -> None: ...
    async def query(self, name: str, q: SearchQuery) -> list[Hit]: ...
    async def count(self, name: str) -> int: ...
    async def scroll(
        self, name: str, flt: PayloadFilter | None, limit: int, with_vectors: bool
    ) -> list[StoredPoint]: ...


def point_id(value: Any) -> PointId:
    """Qdrant ids come back as int, str or uuid.UUID: answer int or the UUID's string."""
    return value if isinstance(value, int) else str(value)


def _system_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(_SYSTEM_NS, f"{kind}:{name}"))


def _kind_filter(kind: str) -> PayloadFilter:
    return PayloadFilter(must=[Condition(key="kind", match=kind)])


def _not_found(name: str) -> StoreError:
    return StoreError(404, "collection_not_found", f"collection {name!r} does not exist")


class Store:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.mode = backend.mode
        self._label_cache: dict[str, LabelSet] = {}  # by versioned collection name
        self._schema = asyncio.Lock()  # creates and drops one at a time (no racing PUTs)

    async def open(self) -> None:
        """Fails start-up with one clear line when the store cannot be used."""
        try:
            await self.backend.open()
            if not await self.backend.exists(SYSTEM):
                await self.backend.create(SYSTEM, 1, CollectionOptions(distance="dot"))
            await self.backend.count(SYSTEM)  # opens it: a locked or broken store fails now
            await self._collect_garbage()
        except Exception as exc:
            raise StoreUnavailable(f"cannot open the {self.mode} store: {exc}") from exc

    async def close(self) -> None:
        await self.backend.close()

    async def healthy(self) -> bool:
        """The readiness check: the store answers (a server may go away at any time)."""
        try:
            return await self.backend.healthy()
        except Exception:  # any transport failure means "not ready"
            return False

    # --- system records -----------------------------------------------------------------------
    async def _meta(self, kind: str, name: str) -> dict[str, Any] | None:
        found = await self.backend.retrieve(SYSTEM, [_system_id(kind, name)], True, False)
        return dict(found[0].payload or {}) if found else None

    async def _put_meta(self, kind: str, name: str, payload: dict[str, Any]) -> None:
        record = {"kind": kind, "name": name, **payload}
        await self.backend.upsert(SYSTEM, [Point(_system_id(kind, name), [1.0], record)])

    async def _drop_meta(self, kind: str, name: str) -> None:
        await self.backend.delete(SYSTEM, [_system_id(kind, name)], None)

    # --- collections --------------------------------------------------------------------------
    async def create_collection(
        self, name: str, model: str, dimension: int, opts: CollectionOptions
    ) -> tuple[CollectionInfo, bool]:
        """Create, or confirm an identical existing one (PUT is idempotent); (info, created).
        A Qdrant collection made outside clipserve is adopted if its dimension fits."""
        async with self._schema:
            meta = await self._meta("collection", name)
            exists = await self.backend.exists(name)
            if meta is not None and exists:
                if meta["model"] != model or meta["dimension"] != dimension:
                    raise StoreError(
                        409,
                        "collection_exists",
                        f"collection {name!r} exists for model {meta['model']!r} "
                        f"(dimension {meta['dimension']})",
                    )
                return await self.collection(name), False
            if not exists:
                await self.backend.create(name, dimension, opts)
            elif (found := await self.backend.dimension(name)) != dimension:
                raise StoreError(
                    409,
                    "collection_exists",
                    f"Qdrant already has a collection {name!r} of dimension {found}; "
                    f"model {model!r} embeds in {dimension}",
                )
            meta = {"model": model, "dimension": dimension, "options": asdict(opts)}
            await self._put_meta("collection", name, meta)
            return await self.collection(name), True

    async def collection(self, name: str, count: bool = True) -> CollectionInfo:
        """404 for an unknown collection; `count=False` skips counting (hot paths)."""
        meta = await self._meta("collection", name)
        if meta is None or not await self.backend.exists(name):
            raise _not_found(name)
        return CollectionInfo(
            name,
            str(meta["model"]),
            int(meta["dimension"]),
            await self.backend.count(name) if count else None,
            CollectionOptions(**meta.get("options", {})),
        )

    async def list_collections(self) -> list[str]:
        records = await self.backend.scroll(SYSTEM, _kind_filter("collection"), 100_000, False)
        return sorted(str((r.payload or {})["name"]) for r in records)

    async def delete_collection(self, name: str) -> None:
        async with self._schema:
            await self.collection(name, count=False)  # 404 if unknown
            await self.backend.drop(name)
            await self._drop_meta("collection", name)

    # --- points -------------------------------------------------------------------------------
    async def upsert(
        self,
        name: str,
        ids: Sequence[PointId],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any] | None],
    ) -> None:
        """Returns only once the points are written: acknowledged = stored."""
        points = [
            Point(i, v.tolist(), p or {}) for i, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        await self.backend.upsert(name, points)

    async def get_point(self, name: str, pid: PointId, with_vector: bool) -> StoredPoint:
        found = await self.backend.retrieve(name, [pid], True, with_vector)
        if not found:
            raise StoreError(404, "point_not_found", f"no point {pid!r} in {name!r}")
        return found[0]

    async def existing_ids(self, name: str, ids: Sequence[PointId]) -> list[PointId]:
        return [p.id for p in await self.backend.retrieve(name, ids, False, False)]

    async def point_vector(self, name: str, pid: PointId) -> np.ndarray:
        point = await self.get_point(name, pid, with_vector=True)
        return np.asarray(point.vector, dtype=np.float32)

    async def delete_points(
        self, name: str, ids: Sequence[PointId] | None, flt: PayloadFilter | None
    ) -> None:
        await self.backend.delete(name, ids, flt)

    async def search(self, name: str, q: SearchQuery) -> list[Hit]:
        return await self.backend.query(name, q)

    # --- label sets ---------------------------------------------------------------------------
    async def put_label_set(self, label_set: LabelSet) -> None:
        """Written to a fresh collection, then switched to in one metadata write, so a reader
        never sees half a label set and a replaced one stays whole until the switch."""
        collection = f"{LABELS_PREFIX}{label_set.name}_{uuid.uuid4().hex[:8]}"
        dim = int(label_set.prototypes.shape[1])
        async with self._schema:
            old = await self._meta("label_set", label_set.name)
            await self.backend.create(collection, dim, CollectionOptions(distance="dot"))
            points = [
                Point(i, v.tolist(), {"label": label})
                for i, (label, v) in enumerate(
                    zip(label_set.labels, label_set.prototypes, strict=True)
                )
            ]
            for start in range(0, len(points), 1000):
                await self.backend.upsert(collection, points[start : start + 1000])
            meta = {
                "model": label_set.model,
                "templates": label_set.templates,
                "count": len(label_set.labels),
                "collection": collection,
            }
            await self._put_meta("label_set", label_set.name, meta)
            self._label_cache[collection] = label_set
            if old is not None:
                await self._drop_label_collection(str(old["collection"]))

    async def _drop_label_collection(self, collection: str) -> None:
        self._label_cache.pop(collection, None)
        if await self.backend.exists(collection):
            await self.backend.drop(collection)

    async def label_set(self, name: str) -> LabelSet:
        """Prototypes are read from Qdrant once per version, then served from memory (a softmax
        needs every label's score anyway, so the whole matrix is used on each request)."""
        meta = await self._meta("label_set", name)
        if meta is None:
            raise StoreError(404, "label_set_not_found", f"label set {name!r} does not exist")
        collection = str(meta["collection"])
        cached = self._label_cache.get(collection)
        if cached is not None:
            return cached
        points = await self.backend.scroll(collection, None, int(meta["count"]) + 1, True)
        points.sort(key=lambda p: int(p.id))
        labels = [str((p.payload or {})["label"]) for p in points]
        prototypes = np.asarray([p.vector for p in points], dtype=np.float32)
        loaded = LabelSet(name, str(meta["model"]), labels, list(meta["templates"]), prototypes)
        self._label_cache[collection] = loaded
        return loaded

    async def list_label_sets(self) -> list[dict[str, Any]]:
        """Every label set's record (name, model, templates, count), by name."""
        records = await self.backend.scroll(SYSTEM, _kind_filter("label_set"), 100_000, False)
        return sorted((dict(r.payload or {}) for r in records), key=lambda m: str(m["name"]))

    async def delete_label_set(self, name: str) -> None:
        async with self._schema:
            meta = await self._meta("label_set", name)
            if meta is None:
                raise StoreError(404, "label_set_not_found", f"label set {name!r} does not exist")
            await self._drop_meta("label_set", name)
            await self._drop_label_collection(str(meta["collection"]))

    async def _collect_garbage(self) -> None:
        """Drop label-set collections no label set points to (a replacement interrupted by a
        crash). Embedded only: on a shared server another replica may be writing one."""
        if self.mode == "server":
            return
        records = await self.backend.scroll(SYSTEM, _kind_filter("label_set"), 100_000, False)
        live = {str((r.payload or {}).get("collection")) for r in records}
        for name in await self.backend.names():
            if name.startswith(LABELS_PREFIX) and name not in live:
                log.warning("dropping orphaned label-set collection %s", name)
                await self.backend.drop(name)


async def optimize_embedded(store: Store, names: list[str] | None) -> list[tuple[str, bool]]:
    """Vacuum and index (HNSW) embedded collections: offline, as it stalls a serving process."""
    optimize = getattr(store.backend, "optimize", None)
    if optimize is None:
        raise StoreError(400, "not_embedded", "a Qdrant server optimizes its collections itself")
    done = []
    for name in names or await store.list_collections():
        await store.collection(name, count=False)  # 404 if unknown
        done.append((name, bool(await optimize(name))))
    return done


def open_store(
    engine: Literal["edge", "local", "none"], data_dir: Any, url: str | None, api_key: str | None
) -> Store:
    """The configured store: a server when `url` is set, else the embedded `engine` (or none)."""
    from pathlib import Path

    if engine == "none":
        from service.store_none import NoBackend

        return Store(NoBackend())
    if url:
        from service.store_client import ClientBackend

        return Store(ClientBackend(url=url, api_key=api_key))
    if engine == "local":
        from service.store_client import ClientBackend

        return Store(ClientBackend(path=Path(data_dir) / "qdrant"))
    from service.store_edge import EdgeBackend

    return Store(EdgeBackend(Path(data_dir) / "edge"))
