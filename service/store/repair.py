"""`clipserve store-check`: the recovery path for a damaged embedded store, with the server
stopped (it owns the data directory while it runs).

It checks every collection as a starting server does and reports; then, for the collections
named, `drop` (gone, with its record), `reset` (empty, same model and options) or `rebuild`
(every point that still reads back, payload and vector, copied into a fresh shard; the rest is
lost and counted). The counts of a clean shutdown are recorded at the end, so the next start
checks against what is there now.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.store.check import check_collection, check_store, clean_state, engine_failure
from service.store.facade import Store, system_records
from service.store.factory import embedded_backend
from service.store.types import (
    SYSTEM,
    Backend,
    CollectionOptions,
    PointId,
    ScrollQuery,
    StoredPoint,
    StoreError,
)

log = logging.getLogger(__name__)
_CHUNK = 256


@dataclass
class Actions:
    drop: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    rebuild: list[str] = field(default_factory=list)


async def _readable_ids(backend: Backend, name: str) -> list[PointId]:
    """Ids the id tracker still knows, page by page until a page fails."""
    ids: list[PointId] = []
    offset: PointId | None = None
    try:
        while True:
            page = await backend.scroll(
                name, ScrollQuery(limit=1000, offset=offset, with_payload=False)
            )
            ids += [p.id for p in page.points]
            if page.next_offset is None:
                return ids
            offset = page.next_offset
    except BaseException as exc:
        if not engine_failure(exc):
            raise
        log.error("%s: ids after %d cannot be listed: %s", name, len(ids), exc)
        return ids


async def _readable_points(backend: Backend, name: str) -> AsyncIterator[list[StoredPoint]]:
    """Chunks of points that read back whole; a chunk that fails is read point by point."""
    ids = await _readable_ids(backend, name)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        try:
            yield await backend.retrieve(name, chunk, True, True)
            continue
        except BaseException as exc:
            if not engine_failure(exc):
                raise
        whole = []
        for pid in chunk:
            try:
                whole += await backend.retrieve(name, [pid], True, True)
            except BaseException as exc:
                if not engine_failure(exc):
                    raise
        yield whole


async def _copy(backend: Backend, target: str, points: AsyncIterator[list[StoredPoint]]) -> int:
    copied = 0
    async for chunk in points:
        chunk = [p for p in chunk if p.vector is not None]
        if chunk:
            vectors = np.asarray([p.vector for p in chunk], dtype=np.float32)
            await backend.upsert(
                target, [p.id for p in chunk], vectors, [p.payload or {} for p in chunk]
            )
            copied += len(chunk)
    return copied


async def _options(store: Store, name: str) -> tuple[int, CollectionOptions]:
    """The dimension and options a collection was made with (its record, else its config)."""
    if name == SYSTEM:
        return 1, CollectionOptions(distance="dot")
    for record in await system_records(store.backend, "collection"):
        if record.get("name") == name:
            return int(record["dimension"]), CollectionOptions(**record.get("options", {}))
    return await store.backend.dimension(name), CollectionOptions()


async def _drop(store: Store, name: str) -> str:
    if name == SYSTEM:
        raise StoreError(400, "system_collection", "rebuild the system collection instead")
    for record in await system_records(store.backend, "label_set"):
        if record.get("collection") == name:
            await store.delete_label_set(str(record["name"]))
            return f"{name}: dropped with label set {record['name']!r}"
    if name in await store.list_collections():
        await store.delete_collection(name)
    else:
        await store.backend.drop(name)
    return f"{name}: dropped"


async def _reset(store: Store, name: str) -> str:
    if name == SYSTEM:
        raise StoreError(400, "system_collection", "rebuild the system collection instead")
    dim, opts = await _options(store, name)
    await store.backend.drop(name)
    await store.backend.create(name, dim, opts)
    return f"{name}: reset (empty, dimension {dim})"


async def _rebuild(store: Store, name: str) -> str:
    backend = store.backend
    dim, opts = await _options(store, name)
    spare = f"{name}.rebuild"
    if await backend.exists(spare):
        await backend.drop(spare)
    await backend.create(spare, dim, opts)
    kept = await _copy(backend, spare, _readable_points(backend, name))
    await backend.drop(name)
    await backend.create(name, dim, opts)
    await _copy(backend, name, _pages(backend, spare))
    await backend.drop(spare)
    return f"{name}: rebuilt with the {kept} points that read back"


async def _pages(backend: Backend, name: str) -> AsyncIterator[list[StoredPoint]]:
    offset: PointId | None = None
    while True:
        page = await backend.scroll(name, ScrollQuery(limit=1000, offset=offset, with_vectors=True))
        yield page.points
        if page.next_offset is None:
            return
        offset = page.next_offset


async def store_check(engine: str, data_dir: Path, actions: Actions) -> tuple[list[str], bool]:
    """(report lines, whether the store is whole now)."""
    backend, root = embedded_backend(engine, data_dir)
    await backend.open()
    store = Store(backend)
    lines: list[str] = []
    try:
        damaged, running = await check_store(backend, root)
        for name in await backend.names():
            if name in damaged:
                lines.append(f"{name}: DAMAGED: {damaged[name]}")
            else:
                lines.append(f"{name}: ok, {await backend.count(name)} points")
        fixes = [(n, _drop) for n in actions.drop] + [(n, _reset) for n in actions.reset]
        for name, fix in fixes + [(n, _rebuild) for n in actions.rebuild]:
            if name not in await backend.names():
                lines.append(f"{name}: no such collection")
                continue
            try:
                lines.append(await fix(store, name))
            except StoreError as exc:
                lines.append(f"{name}: not changed: {exc}")
                continue
            damaged.pop(name, None)
            running.counts.pop(name, None)
        for name in list(damaged):  # anything left: is it still damaged?
            if await check_collection(backend, name, running.counts.get(name)) is None:
                del damaged[name]
        final = await clean_state(backend, running, damaged)
    finally:
        await backend.close()
    final.save(root)
    return lines, not damaged
