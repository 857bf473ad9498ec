"""What every store backend shares: the records it reads and writes, the `Backend` protocol and
the errors. Backends import this module and never the `Store` facade, so arrows point one way:
API -> facade -> backend -> types.

Records are plain dataclasses (and numpy for vectors) because they also cross the store
process's socket pickled; a filter travels as the parsed filter model (pydantic) and becomes
the engine's own filter only inside the engine (`to_edge` / `to_qdrant`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from qdrant_client import models

from service.store.filters import UINT64_MAX, Filter

SYSTEM = "_clipserve"  # system collection: one point per user collection / label set
LABELS_PREFIX = "_labels_"
_SYSTEM_NS = uuid.UUID("6c1f3a52-4d38-4f0e-9d43-0d8f7e3b9a10")
MAX_POINT_ID = UINT64_MAX  # Qdrant's integer ids are unsigned 64-bit

PointId = int | str
Distance = Literal["cosine", "dot", "euclid"]
IndexKind = Literal["keyword", "integer", "float", "bool", "uuid", "datetime"]
# Qdrant's own request models travel as parsed (like filters); engines translate them
WithPayload = models.WithPayloadInterface  # bool, [keys], {"include": [...]}, {"exclude": [...]}
SearchParams = models.SearchParams  # hnsw_ef, exact, quantization (rescore, oversampling), ...
OrderBy = models.OrderBy  # key, direction, start_from
Strategy = Literal["average_vector", "best_score", "sum_scores"]


class StoreError(Exception):
    """A store problem with its HTTP meaning (unknown collection, conflict, damage): status,
    code and message survive pickling, so the store process can raise it for the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    def __reduce__(self) -> tuple[type[StoreError], tuple[int, str, str]]:
        return StoreError, (self.status, self.code, str(self))


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
    # a JPEG thumbnail of each upserted image, at most this many pixels a side (None: none);
    # kept in the point's payload by the HTTP layer (service/thumbnails.py)
    thumbnail_size: int | None = None


SERVER_ONLY_OPTIONS = ("shard_number", "replication_factor")


@dataclass
class CollectionInfo:
    name: str
    model: str
    dimension: int
    count: int | None
    options: CollectionOptions


@dataclass
class StoredPoint:
    id: PointId
    payload: dict[str, Any] | None
    vector: list[float] | None = None
    order_value: int | float | None = None  # the `order_by` key's value, in ordered scrolls


@dataclass
class Hit:
    id: PointId
    score: float
    payload: dict[str, Any] | None
    vector: list[float] | None = None


@dataclass
class Recommend:
    """Qdrant's recommendation: points like the positive examples and unlike the negative ones.
    `average_vector` searches near 2 * mean(positive) - mean(negative); `best_score` and
    `sum_scores` score each point against every example (Qdrant's formulas, in the engine)."""

    positive: list[list[float]]
    negative: list[list[float]] = field(default_factory=list)
    strategy: Strategy = "average_vector"

    def average(self) -> list[float]:
        """The `average_vector` strategy's query (as Qdrant computes it)."""
        mean = np.mean(np.asarray(self.positive, dtype=np.float32), axis=0)
        if self.negative:
            mean = 2 * mean - np.mean(np.asarray(self.negative, dtype=np.float32), axis=0)
        return [float(x) for x in mean]


@dataclass
class SearchQuery:
    """One search: nearest to `vector`, or a recommendation from examples."""

    vector: list[float] | Recommend
    filter: Filter | None = None
    exclude: Sequence[PointId] = ()
    limit: int = 10
    offset: int = 0
    score_threshold: float | None = None
    params: SearchParams | None = None
    with_payload: WithPayload = True
    with_vectors: bool = False


@dataclass
class ScrollQuery:
    """One page of points in id order (`offset`: the previous page's `next_offset`), or in the
    order of a payload key (`order_by`: no cursor, page on with `start_from`)."""

    filter: Filter | None = None
    limit: int = 100
    offset: PointId | None = None
    order_by: OrderBy | None = None
    with_payload: WithPayload = True
    with_vectors: bool = False


@dataclass
class Page:
    points: list[StoredPoint]
    next_offset: PointId | None


@dataclass
class LabelSet:
    name: str
    model: str
    labels: list[str]
    templates: list[str]
    prototypes: np.ndarray = field(repr=False)


class Backend(Protocol):
    """The few Qdrant operations clipserve needs; every write returns once it is stored.
    `mode` says where the data lives: embedded, local, server or no (store)."""

    mode: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def health(self) -> str | None: ...  # None when healthy, else why not
    async def exists(self, name: str) -> bool: ...
    async def dimension(self, name: str) -> int: ...
    async def create(self, name: str, dim: int, opts: CollectionOptions) -> None: ...
    async def drop(self, name: str) -> None: ...
    async def index_payload(self, name: str, key: str, kind: IndexKind) -> None: ...
    async def names(self) -> list[str]: ...
    async def upsert(
        self,
        name: str,
        ids: Sequence[PointId],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
    ) -> None: ...
    async def retrieve(
        self, name: str, ids: Sequence[PointId], with_payload: bool, with_vectors: bool
    ) -> list[StoredPoint]: ...
    async def delete(
        self, name: str, ids: Sequence[PointId] | None, flt: Filter | None
    ) -> None: ...
    async def query(self, name: str, q: SearchQuery) -> list[Hit]: ...
    async def query_batch(self, name: str, qs: Sequence[SearchQuery]) -> list[list[Hit]]: ...
    async def count(self, name: str, flt: Filter | None = None, exact: bool = True) -> int: ...
    async def scroll(self, name: str, q: ScrollQuery) -> Page: ...
    async def set_payload(
        self,
        name: str,
        ids: Sequence[PointId] | None,
        flt: Filter | None,
        payload: dict[str, Any],
        overwrite: bool,
    ) -> None: ...  # merge keys into the payload, or replace it (`overwrite`)
    async def delete_payload(
        self, name: str, ids: Sequence[PointId] | None, flt: Filter | None, keys: Sequence[str]
    ) -> None: ...


def point_id(value: Any) -> PointId:
    """Qdrant ids come back as int, str or uuid.UUID: answer int or the UUID's string."""
    return value if isinstance(value, int) else str(value)


def vector_of(value: Any) -> list[float] | None:
    """A point's vector as both engines return it: a list, or None when not asked for."""
    return list(value) if isinstance(value, list) else None


def hits(points: Sequence[Any], q: SearchQuery) -> list[Hit]:
    """Scored points of either engine (same attribute names) as our hits, payload and vector
    only where the query asked for them."""
    return [
        Hit(
            point_id(p.id),
            float(p.score),
            p.payload if q.with_payload is not False else None,
            vector_of(p.vector) if q.with_vectors else None,
        )
        for p in points
    ]


def system_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(_SYSTEM_NS, f"{kind}:{name}"))


def not_found(name: str) -> StoreError:
    return StoreError(404, "collection_not_found", f"collection {name!r} does not exist")
