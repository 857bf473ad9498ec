"""Request and response models of collections, search, classification and label sets."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from qdrant_client import models

from service.api import limits
from service.api.limits import Counted, Documented
from service.store.filters import (
    KEY_PATTERN,
    Filter,
    FilterError,
    is_payload_key,
    parse_filter,
)
from service.store.types import IndexKind, Strategy
from service.thumbnails import MAX_SIDE, MIN_SIDE, THUMBNAIL_KEY

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
PointId = int | str
# a vector component: finite and within float32 (1e39 would be stored as inf / NaN, never found)
_F32_MAX = float(np.finfo(np.float32).max)
Float32 = Annotated[float, Field(allow_inf_nan=False, ge=-_F32_MAX, le=_F32_MAX)]
PayloadKey = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=KEY_PATTERN)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _payload_keys(value: models.WithPayloadInterface) -> models.WithPayloadInterface:
    """The keys of a payload selector must be payload paths (the engines fail on others)."""
    if isinstance(value, models.PayloadSelectorInclude):
        keys = value.include
    elif isinstance(value, models.PayloadSelectorExclude):
        keys = value.exclude
    else:
        keys = [] if isinstance(value, bool) else value
    for key in keys:
        if not is_payload_key(key):
            raise ValueError(f'{key[:80]!r} is not a payload key such as "a", "a.b", "a[].b"')
    return value


# Qdrant's with_payload: true, false, [keys], {"include": [keys]} or {"exclude": [keys]}
WithPayload = Annotated[models.WithPayloadInterface, AfterValidator(_payload_keys)]


def _user_payload(value: dict[str, Any]) -> dict[str, Any]:
    if THUMBNAIL_KEY in value:
        raise ValueError(f"payload key {THUMBNAIL_KEY!r} is reserved for thumbnails")
    return value


# A payload a client writes: any JSON object but the key the service keeps its thumbnails under
Payload = Annotated[dict[str, Any], AfterValidator(_user_payload)]

# bounds on the work one request may ask for (each store call also has the store deadline)
MAX_BATCH_SEARCHES = 64  # searches in one search/batch
MAX_BATCH_RANKED = 10_000  # their offset + limit together
MAX_EXAMPLES = 64  # positive, and negative, examples of one recommend
MAX_SCROLL_LIMIT = 1000  # points per scroll page
MAX_HNSW_EF = 65_536  # beam of an HNSW search


def _filter(value: Any, _handler: Any) -> Filter:
    """Qdrant's filter JSON, parsed under this request's filter limits; a refusal becomes a
    validation error that keeps its code and status (errors.py answers with them)."""
    try:
        return parse_filter(value, limits.current().filter)
    except FilterError as exc:
        error = PydanticCustomError(exc.code, exc.message, {"status": exc.status})
        raise ValidationError.from_exception_data(
            "Filter", [{"type": error, "loc": exc.path, "input": value}]
        ) from None


QdrantFilter = Annotated[Filter, WrapValidator(_filter)]
Ids = Annotated[list[PointId], Field(fail_fast=True), Counted("max_ids", "ids")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectionCreate(_Request):
    model: str | None = Field(None, description="model whose embeddings the collection holds")
    distance: Literal["cosine", "dot", "euclid"] = "cosine"
    on_disk: StrictBool = False
    hnsw_m: int | None = Field(None, ge=4, le=128)
    hnsw_ef_construct: int | None = Field(None, ge=4, le=4096)
    quantization: Literal["none", "scalar", "binary"] = "none"
    shard_number: int | None = Field(None, ge=1, le=1024)
    replication_factor: int | None = Field(None, ge=1, le=16)
    payload_indexes: dict[PayloadKey, IndexKind] = Field(
        default_factory=dict,
        max_length=64,
        description='payload keys to index by type, e.g. {"digit": "integer"}: filters on them '
        "stay fast as the collection grows; scroll's order_by needs an integer, float or "
        "datetime index on its key",
    )
    thumbnail_size: int | None = Field(
        None,
        ge=MIN_SIDE,
        le=MAX_SIDE,
        description="keep a JPEG thumbnail (at most this many pixels a side) of each upserted "
        "image, served by GET .../points/{id}/thumbnail (default: none)",
    )


class CollectionOut(BaseModel):
    name: str
    model: str
    dimension: int
    count: int
    config: dict[str, Any]


class CollectionList(BaseModel):
    collections: list[str]


class PointIn(_Request):
    id: PointId | None = Field(None, description="int or UUID; default: a content hash UUID")
    image: str | None = Field(None, description="data: URI or base64 (or URL when enabled)")
    text: str | None = None
    vector: list[Float32] | None = Field(None, min_length=1, max_length=65_536)
    payload: Payload | None = None

    @model_validator(mode="after")
    def _one_content(self) -> PointIn:
        given = [k for k in ("image", "text", "vector") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each item needs exactly one of 'image', 'text' or 'vector'")
        return self


class UpsertRequest(_Request):
    items: Annotated[list[PointIn], Field(fail_fast=True), Counted("max_items", "items")]


class UpsertResponse(BaseModel):
    ids: list[PointId]
    status: Literal["acknowledged"] = "acknowledged"


class PointIds(_Request):
    ids: Ids


class ExistingIds(BaseModel):
    ids: list[PointId]


class PointOut(BaseModel):
    id: PointId
    payload: dict[str, Any] | None = None
    vector: list[float] | None = None


class Selection(_Request):
    """Points by id or by filter (deletes, payload updates)."""

    ids: Ids | None = None
    filter: QdrantFilter | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> Selection:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of 'ids' or 'filter'")
        return self


class Query(_Request):
    """A query, or a recommend example: a text, an image, a vector or a stored point's id."""

    text: str | None = None
    image: str | None = None
    vector: list[Float32] | None = Field(None, min_length=1, max_length=65_536)
    id: PointId | None = None

    @model_validator(mode="after")
    def _one_query(self) -> Query:
        given = [k for k in ("text", "image", "vector", "id") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a query needs exactly one of 'text', 'image', 'vector' or 'id'")
        return self


class SearchOptions(_Request):
    """What every search shares, in Qdrant's terms: filter, `params` (Qdrant's SearchParams:
    hnsw_ef, exact, quantization rescore / oversampling), paging, threshold, what comes back
    (`with_payload`: true, false, a list of keys, {"include": [...]} or {"exclude": [...]})."""

    filter: QdrantFilter | None = None
    params: models.SearchParams | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=100_000)
    score_threshold: FiniteFloat | None = None
    with_payload: WithPayload = True
    with_vectors: StrictBool = False

    @model_validator(mode="after")
    def _params_qdrant_reads(self) -> SearchOptions:
        """The ranges a Qdrant server enforces and qdrant-client's model leaves open (Qdrant
        Edge fails on a negative hnsw_ef), and no sparse-vector options."""
        p = self.params
        if p is None:
            return self
        if p.idf is not None:
            raise ValueError(
                "params.idf applies to sparse vectors; collections hold one dense vector"
            )
        if p.hnsw_ef is not None and not 1 <= p.hnsw_ef <= MAX_HNSW_EF:
            raise ValueError(f"params.hnsw_ef must be 1 .. {MAX_HNSW_EF}")
        over = p.quantization.oversampling if p.quantization else None
        if over is not None and not 1 <= over <= 100:
            raise ValueError("params.quantization.oversampling must be 1 .. 100")
        most = p.acorn.max_selectivity if p.acorn else None
        if most is not None and not 0 <= most <= 1:
            raise ValueError("params.acorn.max_selectivity must be 0 .. 1")
        return self


class SearchRequest(SearchOptions):
    query: Query


class BatchSearchRequest(_Request):
    searches: list[SearchRequest] = Field(min_length=1, max_length=MAX_BATCH_SEARCHES)

    @model_validator(mode="after")
    def _bounded(self) -> BatchSearchRequest:
        ranked = sum(s.offset + s.limit for s in self.searches)
        if ranked > MAX_BATCH_RANKED:
            raise ValueError(
                f"the searches rank {ranked} results together (offset + limit of each), "
                f"limit {MAX_BATCH_RANKED} per batch"
            )
        return self


class RecommendRequest(SearchOptions):
    """Points like the positive examples and unlike the negative ones (Qdrant's recommend)."""

    positive: list[Query] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    negative: list[Query] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    strategy: Strategy = "average_vector"

    @model_validator(mode="after")
    def _examples(self) -> RecommendRequest:
        if not self.positive and (self.strategy == "average_vector" or not self.negative):
            raise ValueError(
                "give at least one positive example (best_score and sum_scores also take "
                "negative examples alone)"
            )
        return self


class ScrollRequest(_Request):
    filter: QdrantFilter | None = None
    limit: int = Field(10, ge=1, le=MAX_SCROLL_LIMIT)
    offset: PointId | None = Field(None, description="the previous page's next_page_offset")
    order_by: models.OrderByInterface | None = Field(
        None, description='a payload key, or {"key", "direction": "asc" | "desc", "start_from"}'
    )
    with_payload: WithPayload = True
    with_vectors: StrictBool = False


class CountRequest(_Request):
    filter: QdrantFilter | None = None
    exact: StrictBool = True


class SetPayload(Selection):
    payload: Payload


class DeletePayload(Selection):
    keys: list[PayloadKey] = Field(min_length=1, max_length=1024)


class SearchHit(BaseModel):
    id: PointId
    score: float
    payload: dict[str, Any] | None = None
    vector: list[float] | None = None


class SearchResponse(BaseModel):
    results: list[SearchHit]


class BatchSearchResponse(BaseModel):
    results: list[list[SearchHit]]


class ScrollPoint(PointOut):
    order_value: int | float | None = None


class ScrollResponse(BaseModel):
    points: list[ScrollPoint]
    next_page_offset: PointId | None


class CountResponse(BaseModel):
    count: int


Label = Annotated[str, Documented("max_text_chars")]
Labels = Annotated[list[Label], Field(fail_fast=True), Counted("max_prompts", "labels")]
# str.format fields other than one plain {} (e.g. "{} {}", "{x}", "{:>99999999}") are refused
_TEMPLATE = r"^(?:[^{}]|\{\{|\}\})*(?:\{\}(?:[^{}]|\{\{|\}\})*)?$"
Template = Annotated[
    str,
    Documented("max_text_chars"),
    Field(
        pattern=_TEMPLATE,
        description="a prompt with at most one {} where the label goes (else it is appended); "
        "literal braces doubled",
    ),
]
Templates = Annotated[list[Template], Field(min_length=1, max_length=100, fail_fast=True)]


class ClassifyRequest(_Request):
    # exactly one of labels or label_set; templates only with labels (the validator below)
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["labels"],
                    "properties": {"labels": {"type": "array"}, "label_set": {"type": "null"}},
                },
                {
                    "required": ["label_set"],
                    "properties": {
                        "label_set": {"type": "string"},
                        "labels": {"type": "null"},
                        "templates": {"type": "null"},
                    },
                },
            ]
        }
    )
    model: str | None = None
    images: Annotated[list[str], Field(fail_fast=True), Counted("max_items", "images")] = Field(
        description="data: URIs or base64"
    )
    labels: Labels | None = None
    label_set: str | None = None
    templates: Templates | None = None
    top_k: int = Field(5, ge=1, le=1000)

    @model_validator(mode="after")
    def _labels_or_set(self) -> ClassifyRequest:
        if (self.labels is None) == (self.label_set is None):
            raise ValueError("give exactly one of 'labels' or 'label_set'")
        if self.label_set is not None and self.templates is not None:
            raise ValueError("a label set has its templates already")
        return self


class LabelScore(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    model: str
    results: list[list[LabelScore]]


class LabelSetCreate(_Request):
    model: str | None = None
    labels: Labels
    templates: Templates | None = None


class LabelSetOut(BaseModel):
    name: str
    model: str
    count: int
    templates: list[str]
    labels: list[str] | None = None


class LabelSetList(BaseModel):
    label_sets: list[LabelSetOut]
