"""Vector store over `qdrant-client`: embedded on disk by default, a Qdrant server by URL.

One code path for both, as `qdrant-client` keeps one API over its local and remote modes. What
clipserve needs beyond plain Qdrant (which model a collection belongs to, label sets) is kept in
Qdrant too, in a small system collection, so a restart or a second replica sees the same state.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from qdrant_client import AsyncQdrantClient, models

log = logging.getLogger(__name__)

SYSTEM = "_clipserve"  # system collection: one point per user collection / label set
_SYSTEM_NS = uuid.UUID("6c1f3a52-4d38-4f0e-9d43-0d8f7e3b9a10")
LABELS_PREFIX = "_labels_"

Distance = Literal["cosine", "dot", "euclid"]
_DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
}


class StoreError(Exception):
    """A store problem the client caused (unknown collection, conflict): status + code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class CollectionOptions:
    distance: Distance = "cosine"
    on_disk: bool = False
    hnsw_m: int | None = None
    hnsw_ef_construct: int | None = None
    quantization: Literal["none", "scalar", "binary"] = "none"
    shard_number: int | None = None
    replication_factor: int | None = None


@dataclass
class CollectionInfo:
    name: str
    model: str
    dimension: int
    count: int
    options: CollectionOptions


@dataclass
class Hit:
    id: int | str
    score: float
    payload: dict[str, Any] | None
    vector: list[float] | None = None


@dataclass
class StoredPoint:
    id: int | str
    payload: dict[str, Any] | None
    vector: list[float] | None = None


@dataclass
class LabelSet:
    name: str
    model: str
    labels: list[str]
    templates: list[str]
    prototypes: np.ndarray = field(repr=False)


def _system_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(_SYSTEM_NS, f"{kind}:{name}"))


def _quantization(kind: str) -> models.QuantizationConfig | None:
    if kind == "scalar":
        return models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
        )
    if kind == "binary":
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    return None


class Store:
    def __init__(self, url: str | None, api_key: str | None, path: Path) -> None:
        if url:
            self.client = AsyncQdrantClient(url=url, api_key=api_key, timeout=30)
            self.mode = "server"
        else:
            path.mkdir(parents=True, exist_ok=True)
            self.client = AsyncQdrantClient(path=str(path))
            self.mode = "embedded"
        self._label_cache: dict[str, LabelSet] = {}

    async def open(self) -> None:
        if not await self.client.collection_exists(SYSTEM):
            await self.client.create_collection(
                SYSTEM, vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT)
            )

    async def close(self) -> None:
        await self.client.close()

    async def healthy(self) -> bool:
        try:
            await self.client.get_collections()
            return True
        except Exception:  # any transport failure means "not ready"
            return False

    # --- collections ------------------------------------------------------------------------
    async def _meta(self, kind: str, name: str) -> dict[str, Any] | None:
        found = await self.client.retrieve(SYSTEM, [_system_id(kind, name)], with_payload=True)
        return dict(found[0].payload or {}) if found else None

    async def _put_meta(self, kind: str, name: str, payload: dict[str, Any]) -> None:
        point = models.PointStruct(id=_system_id(kind, name), vector=[1.0], payload=payload)
        await self.client.upsert(SYSTEM, [point], wait=True)

    async def _drop_meta(self, kind: str, name: str) -> None:
        selector = models.PointIdsList(points=[_system_id(kind, name)])
        await self.client.delete(SYSTEM, selector, wait=True)

    async def create_collection(
        self, name: str, model: str, dimension: int, opts: CollectionOptions
    ) -> tuple[CollectionInfo, bool]:
        """Create, or confirm an identical existing one (PUT is idempotent); (info, created)."""
        meta = await self._meta("collection", name)
        if meta is not None:
            if meta["model"] != model or meta["dimension"] != dimension:
                raise StoreError(
                    409,
                    "collection_exists",
                    f"collection {name!r} exists for model {meta['model']!r} "
                    f"(dimension {meta['dimension']})",
                )
            return await self.collection(name), False
        hnsw = None
        if opts.hnsw_m is not None or opts.hnsw_ef_construct is not None:
            hnsw = models.HnswConfigDiff(m=opts.hnsw_m, ef_construct=opts.hnsw_ef_construct)
        await self.client.create_collection(
            name,
            vectors_config=models.VectorParams(
                size=dimension, distance=_DISTANCES[opts.distance], on_disk=opts.on_disk
            ),
            hnsw_config=hnsw,
            quantization_config=_quantization(opts.quantization),
            shard_number=opts.shard_number,
            replication_factor=opts.replication_factor,
        )
        await self._put_meta(
            "collection",
            name,
            {
                "kind": "collection",
                "name": name,
                "model": model,
                "dimension": dimension,
                "options": opts.__dict__,
            },
        )
        return await self.collection(name), True

    async def collection(self, name: str) -> CollectionInfo:
        meta = await self._meta("collection", name)
        if meta is None or not await self.client.collection_exists(name):
            raise StoreError(404, "collection_not_found", f"collection {name!r} does not exist")
        count = await self.client.count(name, exact=True)
        return CollectionInfo(
            name,
            meta["model"],
            int(meta["dimension"]),
            count.count,
            CollectionOptions(**meta.get("options", {})),
        )

    async def list_collections(self) -> list[str]:
        points, _ = await self.client.scroll(
            SYSTEM,
            scroll_filter=models.Filter(
                must=[
                    models.FieldCondition(key="kind", match=models.MatchValue(value="collection"))
                ]
            ),
            limit=10_000,
            with_payload=True,
        )
        return sorted(str((p.payload or {})["name"]) for p in points)

    async def delete_collection(self, name: str) -> None:
        await self.collection(name)  # 404 if unknown
        await self.client.delete_collection(name)
        await self._drop_meta("collection", name)

    # --- points -------------------------------------------------------------------------------
    async def upsert(
        self,
        name: str,
        ids: list[int | str],
        vectors: np.ndarray,
        payloads: list[dict[str, Any] | None],
    ) -> None:
        """Returns only once Qdrant has written the points (`wait=True`): acknowledged = stored."""
        points = [
            models.PointStruct(id=i, vector=v.tolist(), payload=p or {})
            for i, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        await self.client.upsert(name, points, wait=True)

    async def get_point(self, name: str, point_id: int | str, with_vector: bool) -> StoredPoint:
        found = await self.client.retrieve(
            name, [point_id], with_payload=True, with_vectors=with_vector
        )
        if not found:
            raise StoreError(404, "point_not_found", f"no point {point_id!r} in {name!r}")
        p = found[0]
        vec = p.vector if isinstance(p.vector, list) else None
        return StoredPoint(p.id, p.payload, vec)  # type: ignore[arg-type]

    async def existing_ids(self, name: str, ids: list[int | str]) -> list[int | str]:
        found = await self.client.retrieve(name, ids, with_payload=False, with_vectors=False)
        return [p.id if isinstance(p.id, int) else str(p.id) for p in found]

    async def point_vector(self, name: str, point_id: int | str) -> np.ndarray:
        point = await self.get_point(name, point_id, with_vector=True)
        return np.asarray(point.vector, dtype=np.float32)

    async def delete_points(
        self, name: str, ids: list[int | str] | None, flt: models.Filter | None
    ) -> None:
        selector: models.PointIdsList | models.FilterSelector
        if ids is not None:
            selector = models.PointIdsList(points=ids)  # type: ignore[arg-type]
        else:
            selector = models.FilterSelector(filter=flt or models.Filter())
        await self.client.delete(name, selector, wait=True)

    async def search(
        self,
        name: str,
        vector: np.ndarray,
        flt: models.Filter | None,
        limit: int,
        offset: int,
        score_threshold: float | None,
        with_payload: bool,
        with_vectors: bool,
    ) -> list[Hit]:
        result = await self.client.query_points(
            name,
            query=vector.tolist(),
            query_filter=flt,
            limit=limit,
            offset=offset,
            score_threshold=score_threshold,
            with_payload=with_payload,
            with_vectors=with_vectors,
        )
        return [
            Hit(
                p.id if isinstance(p.id, int) else str(p.id),
                float(p.score),
                p.payload if with_payload else None,
                p.vector if with_vectors and isinstance(p.vector, list) else None,  # type: ignore[arg-type]
            )
            for p in result.points
        ]

    # --- label sets -------------------------------------------------------------------------
    async def put_label_set(self, label_set: LabelSet) -> None:
        collection = LABELS_PREFIX + label_set.name
        if await self.client.collection_exists(collection):
            await self.client.delete_collection(collection)
        dim = int(label_set.prototypes.shape[1])
        await self.client.create_collection(
            collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT)
        )
        points = [
            models.PointStruct(id=i, vector=v.tolist(), payload={"label": label})
            for i, (label, v) in enumerate(zip(label_set.labels, label_set.prototypes, strict=True))
        ]
        for start in range(0, len(points), 1000):
            await self.client.upsert(collection, points[start : start + 1000], wait=True)
        await self._put_meta(
            "label_set",
            label_set.name,
            {
                "kind": "label_set",
                "name": label_set.name,
                "model": label_set.model,
                "templates": label_set.templates,
                "count": len(label_set.labels),
            },
        )
        self._label_cache[label_set.name] = label_set

    async def label_set(self, name: str) -> LabelSet:
        """Prototypes are read from Qdrant once, then served from memory (scoring a softmax
        needs every label's score anyway, so the whole matrix is used on each request)."""
        cached = self._label_cache.get(name)
        if cached is not None:
            return cached
        meta = await self._meta("label_set", name)
        if meta is None:
            raise StoreError(404, "label_set_not_found", f"label set {name!r} does not exist")
        points, _ = await self.client.scroll(
            LABELS_PREFIX + name, limit=int(meta["count"]) + 1, with_payload=True, with_vectors=True
        )
        points.sort(key=lambda p: int(p.id))
        labels = [str((p.payload or {})["label"]) for p in points]
        prototypes = np.asarray([p.vector for p in points], dtype=np.float32)
        loaded = LabelSet(name, str(meta["model"]), labels, list(meta["templates"]), prototypes)
        self._label_cache[name] = loaded
        return loaded

    async def delete_label_set(self, name: str) -> None:
        await self.label_set(name)  # 404 if unknown
        await self.client.delete_collection(LABELS_PREFIX + name)
        await self._drop_meta("label_set", name)
        self._label_cache.pop(name, None)
