"""The vector store: collections bound to a model, points, search, label sets.

Engines behind one small `Backend` interface (same Qdrant semantics, filters and ids):
- embedded (default): Qdrant's own engine (`qdrant-edge`), one shard per collection under
  `data_dir/edge`, hosted by a store process of its own (`service.store.process`) that every
  API worker talks to. `benchmarks/store_embedded.py` chose Edge over qdrant-client's local
  mode: at 100k x 512 it upserts in 3 s instead of 2 minutes, searches in 11 ms instead of
  125, filters in 0.24 ms (payload index) instead of 1.3 s, and its WAL survives a crash;
- a Qdrant server or cluster by URL through `qdrant-client` (the same client also runs its local
  mode, `store_engine=local`, which the tests use to exercise that code path without a server).

What clipserve adds on top (which model a collection belongs to, label sets) lives in Qdrant
too, in a small system collection, so a restart or a second replica sees the same state.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from service.store.limits import PayloadLimits, payload_problem
from service.store.types import (
    LABELS_PREFIX,
    SERVER_ONLY_OPTIONS,
    SYSTEM,
    Backend,
    CollectionInfo,
    CollectionOptions,
    Filter,
    Hit,
    LabelSet,
    Page,
    PointId,
    ScrollQuery,
    SearchQuery,
    StoredPoint,
    StoreError,
    StoreUnavailable,
    not_found,
    system_id,
)

log = logging.getLogger(__name__)
_RANGE_INDEXES = ("integer", "float", "datetime")  # the index kinds order_by can walk
_PAGE = 1000  # points per scroll page when a whole collection is read


async def scroll_all(
    backend: Backend, name: str, with_vectors: bool = False, flt: Filter | None = None
) -> AsyncIterator[StoredPoint]:
    """Every point of a collection (that `flt` matches), a page at a time (pages keep each
    store call small)."""
    offset: PointId | None = None
    while True:
        page = await backend.scroll(
            name, ScrollQuery(filter=flt, limit=_PAGE, offset=offset, with_vectors=with_vectors)
        )
        for point in page.points:
            yield point
        if page.next_offset is None:
            return
        offset = page.next_offset


async def system_records(backend: Backend, kind: str) -> list[dict[str, Any]]:
    """The system collection's records of one kind (it holds one per collection / label set,
    so reading it whole is cheap, and needs no filter)."""
    return [
        dict(p.payload or {})
        async for p in scroll_all(backend, SYSTEM)
        if (p.payload or {}).get("kind") == kind
    ]


async def collect_garbage(backend: Backend) -> None:
    """Drop label-set collections no label set points to (a replacement interrupted by a crash).
    Run by whoever owns the data exclusively (the store process), never by one of several
    replicas of a server, where another replica may be writing one right now."""
    live = {str(r.get("collection")) for r in await system_records(backend, "label_set")}
    for name in await backend.names():
        if name.startswith(LABELS_PREFIX) and name not in live:
            log.warning("dropping orphaned label-set collection %s", name)
            await backend.drop(name)


def _differences(
    wanted: CollectionOptions, stored: CollectionOptions, keys: Collection[str]
) -> list[str]:
    return [
        f"{k} is {getattr(stored, k)!r}, not {getattr(wanted, k)!r}"
        for k in (f.name for f in fields(CollectionOptions))
        if k in keys and getattr(stored, k) != getattr(wanted, k)
    ]


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
        except StoreError:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"cannot open the {self.mode} store: {exc}") from exc

    async def close(self) -> None:
        await self.backend.close()

    async def health(self) -> str | None:
        """The readiness check: None when the store answers and nothing in it is damaged, else
        why not (a server may go away at any time; a store process may be restarting)."""
        try:
            return await self.backend.health()
        except Exception as exc:  # any transport failure means "not ready"
            return f"the {self.mode} store does not answer: {exc}"

    # --- system records -----------------------------------------------------------------------
    async def _meta(self, kind: str, name: str) -> dict[str, Any] | None:
        found = await self.backend.retrieve(SYSTEM, [system_id(kind, name)], True, False)
        return dict(found[0].payload or {}) if found else None

    async def _put_meta(self, kind: str, name: str, payload: dict[str, Any]) -> None:
        record = {"kind": kind, "name": name, **payload}
        ones = np.ones((1, 1), dtype=np.float32)
        await self.backend.upsert(SYSTEM, [system_id(kind, name)], ones, [record])

    async def _drop_meta(self, kind: str, name: str) -> None:
        await self.backend.delete(SYSTEM, [system_id(kind, name)], None)

    # --- collections --------------------------------------------------------------------------
    async def create_collection(
        self,
        name: str,
        model: str,
        dimension: int,
        opts: CollectionOptions,
        requested: Collection[str] | None = None,
    ) -> tuple[CollectionInfo, bool]:
        """Create, or confirm an existing one (PUT is idempotent); (info, created). `requested`
        names the options the caller asked for (default: all): if the existing collection
        differs in any of them, 409 names each. A Qdrant collection made outside clipserve is
        adopted if its dimension fits."""
        asked = {f.name for f in fields(CollectionOptions)} if requested is None else requested
        if self.mode != "server":
            server_only = [k for k in SERVER_ONLY_OPTIONS if getattr(opts, k) is not None]
            if server_only:
                raise StoreError(
                    400,
                    "server_only_option",
                    f"{' and '.join(server_only)}: only a Qdrant server (qdrant_url) honours "
                    f"shards and replicas; the {self.mode} store keeps one copy of a collection",
                )
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
                info = await self.collection(name)
                differ = _differences(opts, info.options, asked)
                if differ:
                    raise StoreError(
                        409,
                        "collection_exists",
                        f"collection {name!r} exists with other options: {'; '.join(differ)} "
                        "(delete it first to change them)",
                    )
                return info, False
            created = not exists
            if created:
                try:
                    await self.backend.create(name, dimension, opts)
                except StoreError as exc:  # another API worker created it meanwhile: adopt
                    if exc.code != "collection_exists":
                        raise
                    created = False
            if (found := await self.backend.dimension(name)) != dimension:
                raise StoreError(
                    409,
                    "collection_exists",
                    f"Qdrant already has a collection {name!r} of dimension {found}; "
                    f"model {model!r} embeds in {dimension}",
                )
            meta = {"model": model, "dimension": dimension, "options": asdict(opts)}
            await self._put_meta("collection", name, meta)
            return await self.collection(name), created

    async def collection(self, name: str, count: bool = True) -> CollectionInfo:
        """404 for an unknown collection; `count=False` skips counting (hot paths)."""
        meta = await self._meta("collection", name)
        if meta is None or not await self.backend.exists(name):
            raise not_found(name)
        return CollectionInfo(
            name,
            str(meta["model"]),
            int(meta["dimension"]),
            await self.backend.count(name) if count else None,
            CollectionOptions(**meta.get("options", {})),
        )

    async def list_collections(self) -> list[str]:
        return sorted(str(r["name"]) for r in await system_records(self.backend, "collection"))

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
        await self.backend.upsert(name, ids, vectors, [p or {} for p in payloads])

    async def get_point(self, name: str, pid: PointId, with_vector: bool) -> StoredPoint:
        found = await self.backend.retrieve(name, [pid], True, with_vector)
        if not found:
            raise StoreError(404, "point_not_found", f"no point {pid!r} in {name!r}")
        return found[0]

    async def existing_ids(self, name: str, ids: Sequence[PointId]) -> list[PointId]:
        return [p.id for p in await self.backend.retrieve(name, ids, False, False)]

    async def point_vectors(self, name: str, ids: Sequence[PointId]) -> dict[PointId, np.ndarray]:
        """The stored vectors of these points, in one read (missing ids are absent)."""
        found = await self.backend.retrieve(name, ids, False, True)
        return {p.id: np.asarray(p.vector, dtype=np.float32) for p in found}

    async def _require(
        self, name: str, ids: Sequence[PointId], with_payload: bool
    ) -> list[StoredPoint]:
        """The stored points of these ids, read once; 404 naming every id that is not stored
        (the engines fail a payload update on one)."""
        found = await self.backend.retrieve(name, ids, with_payload, False)
        stored = {p.id for p in found}
        missing = [i for i in ids if i not in stored]
        if missing:
            shown = ", ".join(repr(i) for i in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise StoreError(404, "point_not_found", f"no point {shown}{more} in {name!r}")
        return found

    async def _points(
        self, name: str, read: Sequence[StoredPoint] | None, flt: Filter | None
    ) -> AsyncIterator[StoredPoint]:
        """The points selected: those already read by id, or this filter's (a page at a
        time), with payloads."""
        if read is not None:
            for point in read:
                yield point
        else:
            async for point in scroll_all(self.backend, name, flt=flt):
                yield point

    async def delete_points(
        self, name: str, ids: Sequence[PointId] | None, flt: Filter | None
    ) -> None:
        await self.backend.delete(name, ids, flt)

    async def set_payload(
        self,
        name: str,
        ids: Sequence[PointId] | None,
        flt: Filter | None,
        payload: dict[str, Any],
        overwrite: bool,
        limits: PayloadLimits,
        keep: Collection[str] = (),
    ) -> None:
        """Set keys (merged into each payload) or replace payloads, without re-embedding. The
        payload sent is within the limits (the caller checked); a merge could still push a
        stored payload over the size or key limits, so the points it reaches are read first and
        each merged payload checked (a point written between that read and the update is not).
        `keep`: keys the service itself writes (a thumbnail), outside the client's payload: a
        merge's check leaves them out, and a replaced payload keeps them."""
        read = None if ids is None else await self._require(name, ids, not overwrite or bool(keep))
        if overwrite and keep:
            await self._overwrite_keeping(name, read, flt, payload, keep)
            return
        if not overwrite:
            async for point in self._points(name, read, flt):
                stored = {k: v for k, v in (point.payload or {}).items() if k not in keep}
                problem = payload_problem({**stored, **payload}, limits)
                if problem is not None:
                    raise StoreError(
                        problem.status,
                        problem.code,
                        f"point {point.id!r} after the update: {problem}",
                    )
        await self.backend.set_payload(name, ids, flt, payload, overwrite)

    async def _overwrite_keeping(
        self,
        name: str,
        read: Sequence[StoredPoint] | None,
        flt: Filter | None,
        payload: dict[str, Any],
        keep: Collection[str],
    ) -> None:
        """Qdrant's overwrite drops every key: a point holding a kept key gets the new payload
        and its own kept values in one write of its own (each point is replaced whole, never
        seen without them); the others are replaced together. The filter is read once, so the
        points it selected are the ones replaced even if the new payload no longer matches."""
        plain: list[PointId] = []
        async for point in self._points(name, read, flt):
            kept = {k: v for k, v in (point.payload or {}).items() if k in keep}
            if kept:
                await self.backend.set_payload(name, [point.id], None, {**payload, **kept}, True)
            else:
                plain.append(point.id)
        if plain:
            await self.backend.set_payload(name, plain, None, payload, True)

    async def delete_payload(
        self, name: str, ids: Sequence[PointId] | None, flt: Filter | None, keys: Sequence[str]
    ) -> None:
        if ids is not None:
            await self._require(name, ids, with_payload=False)
        await self.backend.delete_payload(name, ids, flt, keys)

    async def count(self, name: str, flt: Filter | None, exact: bool) -> int:
        return await self.backend.count(name, flt, exact)

    async def scroll(self, name: str, q: ScrollQuery) -> Page:
        """A page of points; ordering by a payload key needs a range index on it (Qdrant's
        rule, which Qdrant Edge enforces and local mode does not: checked here, so every
        engine answers alike) and pages with `start_from`, not a cursor."""
        info = await self.collection(name, count=False)
        if q.order_by is not None:
            key = q.order_by.key
            if info.options.payload_indexes.get(key) not in _RANGE_INDEXES:
                raise StoreError(
                    400,
                    "order_by_not_indexed",
                    f"order_by {key!r} needs an integer, float or datetime payload index on "
                    f"that key; create the collection with "
                    f'"payload_indexes": {{"{key}": "integer"}} (or "float", "datetime")',
                )
            if q.offset is not None:
                raise StoreError(
                    400,
                    "order_by_with_offset",
                    "a scroll ordered by a payload key has no cursor (offset); page on with "
                    "order_by.start_from (the last page's last order_value) instead",
                )
        return await self.backend.scroll(name, q)

    async def search(self, name: str, q: SearchQuery) -> list[Hit]:
        return await self.backend.query(name, q)

    async def search_batch(self, name: str, qs: Sequence[SearchQuery]) -> list[list[Hit]]:
        return await self.backend.query_batch(name, qs)

    # --- label sets ---------------------------------------------------------------------------
    async def put_label_set(self, label_set: LabelSet) -> None:
        """Written to a fresh collection, then switched to in one metadata write, so a reader
        never sees half a label set and a replaced one stays whole until the switch."""
        collection = f"{LABELS_PREFIX}{label_set.name}_{uuid.uuid4().hex[:8]}"
        dim = int(label_set.prototypes.shape[1])
        async with self._schema:
            old = await self._meta("label_set", label_set.name)
            await self.backend.create(collection, dim, CollectionOptions(distance="dot"))
            for start in range(0, len(label_set.labels), _PAGE):
                labels = label_set.labels[start : start + _PAGE]
                await self.backend.upsert(
                    collection,
                    list(range(start, start + len(labels))),
                    np.asarray(label_set.prototypes[start : start + _PAGE], dtype=np.float32),
                    [{"label": label} for label in labels],
                )
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
        points = [p async for p in scroll_all(self.backend, collection, with_vectors=True)]
        points.sort(key=lambda p: int(p.id))
        labels = [str((p.payload or {})["label"]) for p in points]
        prototypes = np.asarray([p.vector for p in points], dtype=np.float32)
        loaded = LabelSet(name, str(meta["model"]), labels, list(meta["templates"]), prototypes)
        self._label_cache[collection] = loaded
        return loaded

    async def list_label_sets(self) -> list[dict[str, Any]]:
        """Every label set's record (name, model, templates, count), by name."""
        records = await system_records(self.backend, "label_set")
        return sorted(records, key=lambda m: str(m["name"]))

    async def delete_label_set(self, name: str) -> None:
        async with self._schema:
            meta = await self._meta("label_set", name)
            if meta is None:
                raise StoreError(404, "label_set_not_found", f"label set {name!r} does not exist")
            await self._drop_meta("label_set", name)
            await self._drop_label_collection(str(meta["collection"]))


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
