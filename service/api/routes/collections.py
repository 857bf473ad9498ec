"""Collections of embeddings in Qdrant: create/get/delete, upsert points, search (one, a batch,
recommend), scroll and count, payload updates, delete points."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from qdrant_client import models
from starlette.convertors import Convertor, register_url_convertor

from service.api.deps import AppState, State
from service.api.errors import ApiError, ItemErrors
from service.api.responses import FastJSONRoute
from service.api.routes.embeddings import check_items, check_texts, embed_image_strings
from service.api.schemas import ErrorResponse
from service.api.schemas_store import (
    NAME_PATTERN,
    BatchSearchRequest,
    BatchSearchResponse,
    CollectionCreate,
    CollectionList,
    CollectionOut,
    CountRequest,
    CountResponse,
    DeletePayload,
    ExistingIds,
    PointIds,
    PointIn,
    PointOut,
    Query,
    RecommendRequest,
    ScrollPoint,
    ScrollRequest,
    ScrollResponse,
    SearchHit,
    SearchOptions,
    SearchRequest,
    SearchResponse,
    Selection,
    SetPayload,
    UpsertRequest,
    UpsertResponse,
)
from service.imaging import ImageError
from service.registry import LoadedModel
from service.store.limits import PayloadLimits, has_ambiguous_number, payload_problem
from service.store.types import (
    MAX_POINT_ID,
    CollectionInfo,
    CollectionOptions,
    Hit,
    PointId,
    Recommend,
    ScrollQuery,
    SearchQuery,
)

# `/points/<action>` routes: never a point id, so `GET .../points/delete` answers 405 (the
# action's methods in Allow) instead of looking up a point named "delete". Add new actions here.
POINT_ACTIONS = ("delete", "exists", "scroll", "count", "payload")


class _PointIdConvertor(Convertor[str]):
    regex = rf"(?!(?:{'|'.join(POINT_ACTIONS)})$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("point_id", _PointIdConvertor())
router = APIRouter(prefix="/v1/collections", tags=["collections"], route_class=FastJSONRoute)

Name = Annotated[str, Path(pattern=NAME_PATTERN, description="collection name")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 422, 429, 503)
}
_CONTENT_NS = uuid.UUID("2f0e5c0e-8b7a-4f4e-a3c1-5b2d1c9e7f11")


def _out(info: CollectionInfo) -> CollectionOut:
    return CollectionOut(
        name=info.name,
        model=info.model,
        dimension=info.dimension,
        count=info.count or 0,
        config=asdict(info.options),
    )


def content_id(item: PointIn) -> str:
    """Deterministic id from the content, so re-sending the same item overwrites, not duplicates
    (an image as a data: URI or as bare base64 is the same image)."""
    if item.image is not None:
        image = item.image
        if image[:5].lower() == "data:":
            image = image.partition(",")[2]
        digest = hashlib.sha256(b"image:" + image.encode()).hexdigest()
    elif item.text is not None:
        digest = hashlib.sha256(b"text:" + item.text.encode()).hexdigest()
    else:
        digest = hashlib.sha256(b"vector:" + np.asarray(item.vector, "<f4").tobytes()).hexdigest()
    return str(uuid.uuid5(_CONTENT_NS, digest))


def _check_id(point_id: int | str) -> int | str:
    """An unsigned 64-bit integer (or its ASCII digits) or a UUID; anything else is a 400. Only
    ASCII counts: `int()` and `uuid.UUID()` read other scripts' digits ("٣" would be 3)."""
    if isinstance(point_id, str) and point_id.isascii():
        if point_id.isdigit():
            point_id = int(point_id)
        else:
            try:
                return str(uuid.UUID(point_id))
            except ValueError:
                pass
    if isinstance(point_id, int) and 0 <= point_id <= MAX_POINT_ID:
        return point_id
    raise ApiError(
        400,
        "invalid_id",
        f"ids are unsigned integers (0 .. 2^64-1, ASCII digits) or UUIDs, not "
        f"{str(point_id)[:80]!r}",
        param="id",
    )


def _model(state: AppState, info: CollectionInfo) -> LoadedModel:
    try:
        return state.registry.get(info.model)
    except LookupError:
        raise ApiError(
            400,
            "model_not_loaded",
            f"collection {info.name!r} uses model {info.model!r}, which this server has not loaded",
        ) from None


@router.put(
    "/{name}",
    response_model=CollectionOut,
    status_code=200,
    responses={**_ERRORS, 201: {"model": CollectionOut, "description": "created"}},
)
async def create_collection(
    name: Name, state: State, response: Response, body: CollectionCreate | None = None
) -> CollectionOut:
    body = body or CollectionCreate.model_validate({})
    model = state.registry.get(body.model)
    opts = CollectionOptions(**body.model_dump(exclude={"model"}))
    asked = body.model_fields_set - {"model"}  # an existing collection must match these
    info, created = await state.store.create_collection(name, model.name, model.dim, opts, asked)
    response.status_code = 201 if created else 200
    return _out(info)


@router.get("", response_model=CollectionList)
async def list_collections(state: State) -> CollectionList:
    return CollectionList(collections=await state.store.list_collections())


@router.get("/{name}", response_model=CollectionOut, responses=_ERRORS)
async def get_collection(name: Name, state: State) -> CollectionOut:
    return _out(await state.store.collection(name))


@router.delete("/{name}", status_code=204, responses=_ERRORS)
async def delete_collection(name: Name, state: State) -> Response:
    await state.store.delete_collection(name)
    return Response(status_code=204)


def _stored_id(item: PointIn | Query) -> int | str | None:
    """A query's point id names a stored point to take the vector of (an item's is its own)."""
    return item.id if isinstance(item, Query) else None


async def _vectors(
    state: AppState, info: CollectionInfo, items: Sequence[PointIn | Query], param: str
) -> np.ndarray:
    """The vector of every item or query, resolved together: stored points in one read, texts in
    one embedding call, images in one; each bad one is named by its index in `param`."""
    vectors = np.zeros((len(items), info.dimension), dtype=np.float32)
    bad: list[tuple[int, ImageError | ApiError]] = []
    texts = [(i, it.text) for i, it in enumerate(items) if it.text is not None]
    images = [(i, it.image) for i, it in enumerate(items) if it.image is not None]
    stored: dict[int, PointId] = {}
    model = _model(state, info) if texts or images else None
    for i, it in enumerate(items):
        if (pid := _stored_id(it)) is not None:
            try:
                stored[i] = _check_id(pid)
            except ApiError as exc:
                bad.append((i, exc))
        elif it.vector is not None:
            if len(it.vector) == info.dimension:
                vectors[i] = it.vector
            else:
                problem = f"vector has {len(it.vector)} dimensions, collection has {info.dimension}"
                bad.append((i, ApiError(400, "dimension_mismatch", problem)))
    if stored:
        found = await state.store.point_vectors(info.name, list(dict.fromkeys(stored.values())))
        for i, pid in stored.items():
            if pid in found:
                vectors[i] = found[pid]
            else:
                problem = f"no point {pid!r} in {info.name!r}"
                bad.append((i, ApiError(404, "point_not_found", problem)))
    if texts:
        try:
            check_texts(state, [t for _, t in texts], param, at=[i for i, _ in texts])
        except ItemErrors as exc:
            bad += _unpacked(exc, list(range(len(items))))
    if images and model is not None:
        try:
            vectors[[i for i, _ in images]] = await embed_image_strings(
                state, model, [v for _, v in images], param
            )
        except ItemErrors as exc:
            bad += _unpacked(exc, [i for i, _ in images])
    if bad:
        raise ItemErrors(sorted(bad, key=lambda p: p[0]), param)
    if texts and model is not None:
        result = await state.embedder.embed_texts(model, [t for _, t in texts])
        vectors[[i for i, _ in texts]] = result.vectors
    return vectors


def _unpacked(exc: ItemErrors, at: list[int]) -> list[tuple[int, ImageError | ApiError]]:
    """An ItemErrors' items again, each at `at[index]` (its index among all the items)."""
    return [
        (at[int(e["index"])], ApiError(exc.status, str(e["code"]), str(e["message"])))
        for e in exc.items or []
    ]


async def _one(state: AppState, info: CollectionInfo, query: Query, param: str) -> np.ndarray:
    """One query's vector; its problem is the request's error (no list of items)."""
    try:
        return (await _vectors(state, info, [query], param))[0]
    except ItemErrors as exc:
        raise _alone(exc, param) from None


def _alone(exc: ItemErrors, param: str) -> ApiError:
    first = (exc.items or [{}])[0]
    return ApiError(exc.status, exc.code, str(first.get("message", exc.message)), param=param)


def _limits(state: AppState) -> PayloadLimits:
    s = state.settings
    return PayloadLimits(s.max_payload_bytes, s.max_payload_depth, s.max_payload_keys)


async def _checked_payloads(
    state: AppState,
    request: Request,
    payloads: list[dict[str, Any] | None],
    exact: Callable[[Any], list[dict[str, Any] | None]],
    param: str,
) -> list[dict[str, Any] | None]:
    """Payloads as sent, each within the payload limits (else every bad one is listed). Only
    payloads already within the limits are searched for integers the fast parser turned into
    floats, and then read again exactly (`exact` picks them out of the request's JSON)."""
    limits = _limits(state)

    def check(payloads: list[dict[str, Any] | None]) -> None:
        bad = [(i, payload_problem(p, limits)) for i, p in enumerate(payloads) if p]
        errors: list[tuple[int, ImageError | ApiError]] = [
            (i, ApiError(e.status, e.code, str(e))) for i, e in bad if e is not None
        ]
        if errors:
            raise ItemErrors(errors, param)

    check(payloads)
    if any(p and has_ambiguous_number(p) for p in payloads):
        payloads = exact(json.loads(await request.body()))
        check(payloads)
    return payloads


@router.post("/{name}/points", response_model=UpsertResponse, responses=_ERRORS)
async def upsert_points(
    name: Name, body: UpsertRequest, state: State, request: Request
) -> UpsertResponse:
    """All or nothing: if any item is bad, none is written and each bad item is listed.
    The answer comes only after Qdrant has written the points."""
    check_items(state, len(body.items), "items")
    payloads = await _checked_payloads(
        state,
        request,
        [it.payload for it in body.items],
        lambda raw: [item.get("payload") for item in raw["items"]],
        "items",
    )
    info = await state.store.collection(name, count=False)
    ids = [_check_id(it.id) if it.id is not None else content_id(it) for it in body.items]
    vectors = await _vectors(state, info, body.items, "items")
    await state.store.upsert(name, ids, vectors, payloads)
    return UpsertResponse(ids=ids)


@router.post("/{name}/points/exists", response_model=ExistingIds, responses=_ERRORS)
async def existing_points(name: Name, body: PointIds, state: State) -> ExistingIds:
    """Which of these ids are stored (lets a bulk indexer resume without re-sending)."""
    await state.store.collection(name, count=False)
    found = await state.store.existing_ids(name, [_check_id(i) for i in body.ids])
    return ExistingIds(ids=found)


@router.get("/{name}/points/{point_id:point_id}", response_model=PointOut, responses=_ERRORS)
async def get_point(name: Name, point_id: str, state: State, with_vector: bool = False) -> PointOut:
    await state.store.collection(name, count=False)
    p = await state.store.get_point(name, _check_id(point_id), with_vector)
    return PointOut(id=p.id, payload=p.payload, vector=p.vector)


@router.delete("/{name}/points/{point_id:point_id}", status_code=204, responses=_ERRORS)
async def delete_point(name: Name, point_id: str, state: State) -> Response:
    await state.store.collection(name, count=False)
    await state.store.delete_points(name, [_check_id(point_id)], None)
    return Response(status_code=204)


@router.post("/{name}/points/delete", status_code=204, responses=_ERRORS)
async def delete_points(name: Name, body: Selection, state: State) -> Response:
    """By ids or by payload filter; answered once the points are gone."""
    await state.store.collection(name, count=False)
    ids = [_check_id(i) for i in body.ids] if body.ids is not None else None
    await state.store.delete_points(name, ids, body.filter)
    return Response(status_code=204)


def _ids(body: Selection) -> list[PointId] | None:
    return [_check_id(i) for i in body.ids] if body.ids is not None else None


@router.post("/{name}/points/payload", status_code=204, responses=_ERRORS)
async def set_payload(name: Name, body: SetPayload, state: State, request: Request) -> Response:
    """Qdrant's set payload: these keys are written into each payload, the others kept."""
    return await _put_payload(name, body, state, request, overwrite=False)


@router.put("/{name}/points/payload", status_code=204, responses=_ERRORS)
async def overwrite_payload(
    name: Name, body: SetPayload, state: State, request: Request
) -> Response:
    """Qdrant's overwrite payload: each payload becomes this one."""
    return await _put_payload(name, body, state, request, overwrite=True)


async def _put_payload(
    name: str, body: SetPayload, state: AppState, request: Request, overwrite: bool
) -> Response:
    await state.store.collection(name, count=False)
    try:
        checked = await _checked_payloads(
            state, request, [body.payload], lambda raw: [raw["payload"]], "payload"
        )
    except ItemErrors as exc:
        raise _alone(exc, "payload") from None
    payload = checked[0] or {}
    await state.store.set_payload(name, _ids(body), body.filter, payload, overwrite, _limits(state))
    return Response(status_code=204)


@router.post("/{name}/points/payload/delete", status_code=204, responses=_ERRORS)
async def delete_payload(name: Name, body: DeletePayload, state: State) -> Response:
    """Qdrant's delete payload: these keys leave each payload."""
    await state.store.collection(name, count=False)
    await state.store.delete_payload(name, _ids(body), body.filter, body.keys)
    return Response(status_code=204)


@router.post("/{name}/points/scroll", response_model=ScrollResponse, responses=_ERRORS)
async def scroll(name: Name, body: ScrollRequest, state: State) -> ScrollResponse:
    """Points in id order, a page at a time (`offset`: the last page's `next_page_offset`), or
    ordered by an indexed payload key (`order_by`, paged with its `start_from`)."""
    order_by = body.order_by
    page = await state.store.scroll(
        name,
        ScrollQuery(
            filter=body.filter,
            limit=body.limit,
            offset=_check_id(body.offset) if body.offset is not None else None,
            order_by=models.OrderBy(key=order_by) if isinstance(order_by, str) else order_by,
            with_payload=body.with_payload,
            with_vectors=body.with_vectors,
        ),
    )
    points = [
        ScrollPoint(id=p.id, payload=p.payload, vector=p.vector, order_value=p.order_value)
        for p in page.points
    ]
    return ScrollResponse(points=points, next_page_offset=page.next_offset)


@router.post("/{name}/points/count", response_model=CountResponse, responses=_ERRORS)
async def count(name: Name, body: CountRequest, state: State) -> CountResponse:
    await state.store.collection(name, count=False)
    return CountResponse(count=await state.store.count(name, body.filter, body.exact))


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
    return [_check_id(q.id) for q in queries if q.id is not None]


def _results(hits: list[Hit]) -> list[SearchHit]:
    return [SearchHit(id=h.id, score=h.score, payload=h.payload, vector=h.vector) for h in hits]


@router.post("/{name}/search", response_model=SearchResponse, responses=_ERRORS)
async def search(name: Name, body: SearchRequest, state: State) -> SearchResponse:
    info = await state.store.collection(name, count=False)
    vector = await _one(state, info, body.query, "query")
    hits = await state.store.search(name, _query(body, vector, _examples([body.query])))
    return SearchResponse(results=_results(hits))


@router.post("/{name}/search/batch", response_model=BatchSearchResponse, responses=_ERRORS)
async def search_batch(name: Name, body: BatchSearchRequest, state: State) -> BatchSearchResponse:
    """Several searches in one request: their texts embedded in one batch, their images in
    another, and one planned batch in the engine; results in request order."""
    info = await state.store.collection(name, count=False)
    vectors = await _vectors(state, info, [s.query for s in body.searches], "searches")
    queries = [
        _query(s, v, _examples([s.query])) for s, v in zip(body.searches, vectors, strict=True)
    ]
    found = await state.store.search_batch(name, queries)
    return BatchSearchResponse(results=[_results(hits) for hits in found])


@router.post("/{name}/recommend", response_model=SearchResponse, responses=_ERRORS)
async def recommend(name: Name, body: RecommendRequest, state: State) -> SearchResponse:
    """More like the positive examples, less like the negative ones (Qdrant's recommend with
    its strategies); every example that is a stored point is left out of the results."""
    info = await state.store.collection(name, count=False)

    async def resolve(examples: list[Query], param: str) -> list[list[float]]:
        return (await _vectors(state, info, examples, param)).tolist() if examples else []

    positive, negative = await asyncio.gather(
        resolve(body.positive, "positive"), resolve(body.negative, "negative")
    )
    examples = Recommend(positive, negative, body.strategy)
    exclude = list(dict.fromkeys(_examples([*body.positive, *body.negative])))
    hits = await state.store.search(name, _query(body, examples, exclude))
    return SearchResponse(results=_results(hits))
