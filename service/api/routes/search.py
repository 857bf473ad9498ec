"""Search a collection: one query, a batch of them, or Qdrant's recommend ("more like these, not
like those"), each with Qdrant's search options."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter

from service.api.deps import State
from service.api.responses import FastJSONRoute
from service.api.routes.collections import ERRORS, Name
from service.api.routes.vectors import check_id, one_vector, resolve_vectors
from service.api.schemas_store import (
    BatchSearchRequest,
    BatchSearchResponse,
    Query,
    RecommendRequest,
    SearchHit,
    SearchOptions,
    SearchRequest,
    SearchResponse,
)
from service.store.types import Hit, PointId, Recommend, SearchQuery
from service.thumbnails import split_thumbnail

router = APIRouter(prefix="/v1/collections", tags=["search"], route_class=FastJSONRoute)


def _query(
    body: SearchOptions, vector: np.ndarray | Recommend, exclude: Sequence[PointId]
) -> SearchQuery:
    return SearchQuery(
        vector=vector if isinstance(vector, Recommend) else vector.tolist(),
        filter=body.filter,
        exclude=exclude,
        limit=body.limit,
        offset=body.offset,
        score_threshold=body.score_threshold,
        params=body.params,
        with_payload=body.with_payload,
        with_vectors=body.with_vectors,
    )


def _examples(queries: Sequence[Query]) -> list[PointId]:
    """Stored points a search starts from: left out of its results ("more like this")."""
    return [check_id(q.id) for q in queries if q.id is not None]


def _results(hits: list[Hit]) -> list[SearchHit]:
    """Hits as answered: a thumbnail is served by its own route, never inside a payload."""
    return [
        SearchHit(id=h.id, score=h.score, payload=split_thumbnail(h.payload)[0], vector=h.vector)
        for h in hits
    ]


@router.post("/{name}/search", response_model=SearchResponse, responses=ERRORS)
async def search(name: Name, body: SearchRequest, state: State) -> SearchResponse:
    info = await state.store.collection(name, count=False)
    vector = await one_vector(state, info, body.query, "query")
    hits = await state.store.search(name, _query(body, vector, _examples([body.query])))
    return SearchResponse(results=_results(hits))


@router.post("/{name}/search/batch", response_model=BatchSearchResponse, responses=ERRORS)
async def search_batch(name: Name, body: BatchSearchRequest, state: State) -> BatchSearchResponse:
    """Several searches in one request: their texts embedded in one batch, their images in
    another, and one planned batch in the engine; results in request order."""
    info = await state.store.collection(name, count=False)
    vectors, _ = await resolve_vectors(state, info, [s.query for s in body.searches], "searches")
    queries = [
        _query(s, v, _examples([s.query])) for s, v in zip(body.searches, vectors, strict=True)
    ]
    found = await state.store.search_batch(name, queries)
    return BatchSearchResponse(results=[_results(hits) for hits in found])


@router.post("/{name}/recommend", response_model=SearchResponse, responses=ERRORS)
async def recommend(name: Name, body: RecommendRequest, state: State) -> SearchResponse:
    """More like the positive examples, less like the negative ones (Qdrant's recommend with
    its strategies); every example that is a stored point is left out of the results."""
    info = await state.store.collection(name, count=False)

    async def resolve(examples: list[Query], param: str) -> list[list[float]]:
        return (await resolve_vectors(state, info, examples, param))[0].tolist() if examples else []

    positive, negative = await asyncio.gather(
        resolve(body.positive, "positive"), resolve(body.negative, "negative")
    )
    examples = Recommend(positive, negative, body.strategy)
    exclude = list(dict.fromkeys(_examples([*body.positive, *body.negative])))
    hits = await state.store.search(name, _query(body, examples, exclude))
    return SearchResponse(results=_results(hits))
