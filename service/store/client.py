"""Store backend over `qdrant-client`: a Qdrant server or cluster by URL (API key; TLS with an
https URL), or the client's local mode on a path (pure Python, brute force; kept as a fallback
and to test this code path without a server)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient, models

from service.store.filters import to_qdrant
from service.store.types import (
    CollectionOptions,
    Filter,
    Hit,
    IndexKind,
    Page,
    PointId,
    Recommend,
    ScrollQuery,
    SearchQuery,
    StoredPoint,
    hits,
    point_id,
    vector_of,
)

log = logging.getLogger(__name__)

_DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
}


def _quantization(kind: str) -> models.QuantizationConfig | None:
    if kind == "scalar":
        return models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
        )
    if kind == "binary":
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    return None


def _selector(
    ids: Sequence[PointId] | None, flt: Filter | None
) -> models.PointIdsList | models.FilterSelector:
    if ids is not None:
        return models.PointIdsList(points=list(ids))
    return models.FilterSelector(filter=flt or Filter())


def _query(v: list[float] | Recommend) -> list[float] | models.RecommendQuery:
    if not isinstance(v, Recommend):
        return v
    strategy = models.RecommendStrategy(v.strategy)
    examples = models.RecommendInput(
        positive=list(v.positive), negative=list(v.negative), strategy=strategy
    )
    return models.RecommendQuery(recommend=examples)


def _request(q: SearchQuery, params: models.SearchParams | None) -> models.QueryRequest:
    return models.QueryRequest(
        query=_query(q.vector),
        filter=to_qdrant(q.filter, q.exclude),
        params=params,
        limit=q.limit,
        offset=q.offset,
        score_threshold=q.score_threshold,
        with_payload=q.with_payload,
        with_vector=q.with_vectors,
    )


class ClientBackend:
    def __init__(
        self, url: str | None = None, api_key: str | None = None, path: Path | None = None
    ) -> None:
        if url:
            # the version check runs in open(), awaited, instead of a background thread
            self.client = AsyncQdrantClient(
                url=url, api_key=api_key, timeout=30, check_compatibility=False
            )
            self.mode = "server"
        else:
            assert path is not None
            path.mkdir(parents=True, exist_ok=True)
            self.client = AsyncQdrantClient(path=str(path))
            self.mode = "local"

    async def open(self) -> None:
        if self.mode != "server":
            return
        from importlib.metadata import version

        from qdrant_client.common.version_check import is_compatible

        server, client = (await self.client.info()).version, version("qdrant-client")
        if not is_compatible(client, server):
            log.warning("Qdrant server %s may not work with qdrant-client %s", server, client)

    async def close(self) -> None:
        await self.client.close()

    async def health(self) -> str | None:
        await self.client.get_collections()
        return None

    async def exists(self, name: str) -> bool:
        return bool(await self.client.collection_exists(name))

    async def dimension(self, name: str) -> int:
        params = (await self.client.get_collection(name)).config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise ValueError(f"collection {name!r} has named vectors; clipserve uses one vector")
        return int(params.size)

    async def create(self, name: str, dim: int, opts: CollectionOptions) -> None:
        hnsw = None
        if opts.hnsw_m is not None or opts.hnsw_ef_construct is not None:
            hnsw = models.HnswConfigDiff(m=opts.hnsw_m, ef_construct=opts.hnsw_ef_construct)
        await self.client.create_collection(
            name,
            vectors_config=models.VectorParams(
                size=dim, distance=_DISTANCES[opts.distance], on_disk=opts.on_disk
            ),
            hnsw_config=hnsw,
            quantization_config=_quantization(opts.quantization),
            shard_number=opts.shard_number,
            replication_factor=opts.replication_factor,
        )
        for key, kind in opts.payload_indexes.items():
            await self.index_payload(name, key, kind)

    async def index_payload(self, name: str, key: str, kind: IndexKind) -> None:
        """A payload index (local mode always scans: nothing to do)."""
        if self.mode == "local":
            return
        schema = models.PayloadSchemaType(kind)
        await self.client.create_payload_index(name, key, field_schema=schema, wait=True)

    async def drop(self, name: str) -> None:
        await self.client.delete_collection(name)

    async def names(self) -> list[str]:
        return sorted(c.name for c in (await self.client.get_collections()).collections)

    async def upsert(
        self,
        name: str,
        ids: Sequence[PointId],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        structs = [
            models.PointStruct(id=i, vector=v, payload=p)
            for i, v, p in zip(ids, vectors.tolist(), payloads, strict=True)
        ]
        await self.client.upsert(name, structs, wait=True)

    async def retrieve(
        self, name: str, ids: Sequence[PointId], with_payload: bool, with_vectors: bool
    ) -> list[StoredPoint]:
        found = await self.client.retrieve(
            name, list(ids), with_payload=with_payload, with_vectors=with_vectors
        )
        return [StoredPoint(point_id(p.id), p.payload, vector_of(p.vector)) for p in found]

    async def delete(self, name: str, ids: Sequence[PointId] | None, flt: Filter | None) -> None:
        await self.client.delete(name, _selector(ids, flt), wait=True)

    async def set_payload(
        self,
        name: str,
        ids: Sequence[PointId] | None,
        flt: Filter | None,
        payload: dict[str, Any],
        overwrite: bool,
    ) -> None:
        put = self.client.overwrite_payload if overwrite else self.client.set_payload
        await put(name, payload, _selector(ids, flt), wait=True)

    async def delete_payload(
        self, name: str, ids: Sequence[PointId] | None, flt: Filter | None, keys: Sequence[str]
    ) -> None:
        await self.client.delete_payload(name, list(keys), _selector(ids, flt), wait=True)

    def _params(self, q: SearchQuery) -> models.SearchParams | None:
        """Local mode always searches exactly (it warns on each search that has params)."""
        return q.params if self.mode == "server" else None

    async def query(self, name: str, q: SearchQuery) -> list[Hit]:
        result = await self.client.query_points(
            name,
            query=_query(q.vector),
            query_filter=to_qdrant(q.filter, q.exclude),
            search_params=self._params(q),
            limit=q.limit,
            offset=q.offset,
            score_threshold=q.score_threshold,
            with_payload=q.with_payload,
            with_vectors=q.with_vectors,
        )
        return hits(result.points, q)

    async def query_batch(self, name: str, qs: Sequence[SearchQuery]) -> list[list[Hit]]:
        requests = [_request(q, self._params(q)) for q in qs]
        found = await self.client.query_batch_points(name, requests)
        return [hits(r.points, q) for r, q in zip(found, qs, strict=True)]

    async def count(self, name: str, flt: Filter | None = None, exact: bool = True) -> int:
        return int((await self.client.count(name, to_qdrant(flt), exact=exact)).count)

    async def scroll(self, name: str, q: ScrollQuery) -> Page:
        records, after = await self.client.scroll(
            name,
            scroll_filter=to_qdrant(q.filter),
            limit=q.limit,
            offset=q.offset,
            order_by=q.order_by,
            with_payload=q.with_payload,
            with_vectors=q.with_vectors,
        )
        points = [
            StoredPoint(point_id(p.id), p.payload, vector_of(p.vector), p.order_value)
            for p in records
        ]
        return Page(points, None if after is None else point_id(after))
