"""Collections of embeddings in Qdrant: create/get/delete, upsert points, search, delete points."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from dataclasses import asdict
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from starlette.convertors import Convertor, register_url_convertor

from service.api.deps import AppState, State
from service.api.errors import ApiError, ItemErrors
from service.api.responses import FastJSONRoute
from service.api.routes.embeddings import check_texts, embed_image_sources, embed_image_strings
from service.api.schemas import ErrorResponse
from service.api.schemas_store import (
    NAME_PATTERN,
    CollectionCreate,
    CollectionList,
    CollectionOut,
    DeletePoints,
    ExistingIds,
    PointIds,
    PointIn,
    PointOut,
    Query,
    SearchRequest,
    SearchResponse,
    UpsertRequest,
    UpsertResponse,
)
from service.embedder import DeadlineExceeded
from service.imaging import ImageError
from service.inputs import ImageSource, source_bytes
from service.registry import LoadedModel
from service.store.limits import PayloadLimits, has_ambiguous_number, payload_problem
from service.store.types import MAX_POINT_ID, CollectionInfo, CollectionOptions, SearchQuery
from service.thumbnails import THUMBNAIL_KEY, make_thumbnail, split_thumbnail

# `/points/<action>` routes: never a point id, so `GET .../points/delete` answers 405 (the
# action's methods in Allow) instead of looking up a point named "delete". Add new actions here.
POINT_ACTIONS = ("delete", "exists")


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


async def _embed_items(
    state: AppState, model: LoadedModel | None, info: CollectionInfo, items: list[PointIn]
) -> tuple[np.ndarray, dict[int, ImageSource]]:
    """Vectors for every item (model is None only when every item brings its own vector), and
    the resolved image of each image item, by item index."""
    vectors = np.zeros((len(items), info.dimension), dtype=np.float32)
    sources: dict[int, ImageSource] = {}
    bad: list[tuple[int, ImageError | ApiError]] = []
    texts = [(i, it.text) for i, it in enumerate(items) if it.text is not None]
    images = [(i, it.image) for i, it in enumerate(items) if it.image is not None]
    for i, it in enumerate(items):
        if it.vector is None:
            continue
        if len(it.vector) == info.dimension:
            vectors[i] = it.vector
        else:
            problem = f"vector has {len(it.vector)} dimensions, collection has {info.dimension}"
            bad.append((i, ApiError(400, "dimension_mismatch", problem)))
    if texts:
        check_texts(state, [t for _, t in texts], "items", at=[i for i, _ in texts])
    if images and model is not None:
        try:
            vectors[[i for i, _ in images]], resolved = await embed_image_sources(
                state, model, [v for _, v in images], "items"
            )
            sources = {i: source for (i, _), source in zip(images, resolved, strict=True)}
        except ItemErrors as exc:
            bad += [
                (
                    images[int(e["index"])][0],
                    ApiError(exc.status, str(e["code"]), str(e["message"])),
                )
                for e in exc.items or []
            ]
    if bad:
        raise ItemErrors(sorted(bad, key=lambda p: p[0]), "items")
    if texts and model is not None:
        result = await state.embedder.embed_texts(model, [t for _, t in texts])
        vectors[[i for i, _ in texts]] = result.vectors
    return vectors, sources


async def _with_thumbnails(
    state: AppState,
    model: LoadedModel,
    side: int,
    payloads: list[dict[str, Any] | None],
    sources: dict[int, ImageSource],
) -> list[dict[str, Any] | None]:
    """The payloads with a thumbnail in each image item's: made in one thread off the event loop
    (it decodes each image again, at reduced scale for JPEGs), within the request's deadline."""
    pre = model.images
    assert pre is not None

    def make() -> dict[int, str]:
        return {i: make_thumbnail(source_bytes(s), side, pre) for i, s in sources.items()}

    deadline = state.settings.request_timeout_s
    try:
        async with asyncio.timeout(deadline):
            made = await asyncio.to_thread(make)
    except TimeoutError:
        raise DeadlineExceeded(f"thumbnails not made within {deadline}s") from None
    return [
        {**(p or {}), THUMBNAIL_KEY: made[i]} if i in made else p for i, p in enumerate(payloads)
    ]


async def _checked_payloads(
    state: AppState, request: Request, items: list[PointIn]
) -> list[dict[str, Any] | None]:
    """Payloads as sent, each within the payload limits (else every bad one is listed). Only
    payloads already within the limits are searched for integers the fast parser turned into
    floats, and then read again exactly."""
    s = state.settings
    limits = PayloadLimits(s.max_payload_bytes, s.max_payload_depth, s.max_payload_keys)

    def check(payloads: list[dict[str, Any] | None]) -> None:
        bad = [(i, payload_problem(p, limits)) for i, p in enumerate(payloads) if p]
        errors: list[tuple[int, ImageError | ApiError]] = [
            (i, ApiError(e.status, e.code, str(e))) for i, e in bad if e is not None
        ]
        if errors:
            raise ItemErrors(errors, "items")

    payloads = [it.payload for it in items]
    check(payloads)
    if any(p and has_ambiguous_number(p) for p in payloads):
        exact = json.loads(await request.body())["items"]
        payloads = [item.get("payload") for item in exact]
        check(payloads)
    return payloads


@router.post("/{name}/points", response_model=UpsertResponse, responses=_ERRORS)
async def upsert_points(
    name: Name, body: UpsertRequest, state: State, request: Request
) -> UpsertResponse:
    """All or nothing: if any item is bad, none is written and each bad item is listed.
    The answer comes only after Qdrant has written the points."""
    payloads = await _checked_payloads(state, request, body.items)
    info = await state.store.collection(name, count=False)
    needs_model = any(it.vector is None for it in body.items)
    model = _model(state, info) if needs_model else None
    ids = [_check_id(it.id) if it.id is not None else content_id(it) for it in body.items]
    vectors, sources = await _embed_items(state, model, info, body.items)
    if info.options.thumbnail_size and sources and model is not None:
        payloads = await _with_thumbnails(
            state, model, info.options.thumbnail_size, payloads, sources
        )
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
    return PointOut(id=p.id, payload=split_thumbnail(p.payload)[0], vector=p.vector)


@router.get(
    "/{name}/points/{point_id:point_id}/thumbnail",
    response_class=Response,
    responses={**_ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "a JPEG"}},
)
async def get_thumbnail(name: Name, point_id: str, state: State) -> Response:
    """The point's thumbnail (collections created with `thumbnail_size`), as a JPEG."""
    await state.store.collection(name, count=False)
    p = await state.store.get_point(name, _check_id(point_id), with_vector=False)
    thumbnail = split_thumbnail(p.payload)[1]
    if thumbnail is None:
        raise ApiError(
            404,
            "thumbnail_not_found",
            f"point {p.id!r} has no thumbnail: only images upserted into a collection created "
            "with thumbnail_size have one",
        )
    return Response(base64.b64decode(thumbnail), media_type="image/jpeg")


@router.delete("/{name}/points/{point_id:point_id}", status_code=204, responses=_ERRORS)
async def delete_point(name: Name, point_id: str, state: State) -> Response:
    await state.store.collection(name, count=False)
    await state.store.delete_points(name, [_check_id(point_id)], None)
    return Response(status_code=204)


@router.post("/{name}/points/delete", status_code=204, responses=_ERRORS)
async def delete_points(name: Name, body: DeletePoints, state: State) -> Response:
    """By ids or by payload filter; answered once the points are gone."""
    await state.store.collection(name, count=False)
    ids = [_check_id(i) for i in body.ids] if body.ids is not None else None
    await state.store.delete_points(name, ids, body.filter)
    return Response(status_code=204)


async def query_vector(state: AppState, info: CollectionInfo, query: Query) -> np.ndarray:
    if query.vector is not None:
        if len(query.vector) != info.dimension:
            raise ApiError(
                400,
                "dimension_mismatch",
                f"query vector has {len(query.vector)} dimensions, collection has {info.dimension}",
                param="query.vector",
            )
        return np.asarray(query.vector, dtype=np.float32)
    if query.id is not None:
        return await state.store.point_vector(info.name, _check_id(query.id))
    model = _model(state, info)
    if query.text is not None:
        check_texts(state, [query.text], "query.text")
        return (await state.embedder.embed_texts(model, [query.text])).vectors[0]
    assert query.image is not None
    return (await embed_image_strings(state, model, [query.image], "query.image"))[0]


@router.post("/{name}/search", response_model=SearchResponse, responses=_ERRORS)
async def search(name: Name, body: SearchRequest, state: State) -> SearchResponse:
    info = await state.store.collection(name, count=False)
    vector = await query_vector(state, info, body.query)
    # "more like this" (query by stored id): leave the example itself out
    exclude = [_check_id(body.query.id)] if body.query.id is not None else []
    query = SearchQuery(
        vector=vector.tolist(),
        filter=body.filter,
        exclude=exclude,
        limit=body.limit,
        offset=body.offset,
        score_threshold=body.score_threshold,
        with_payload=body.with_payload,
        with_vectors=body.with_vectors,
    )
    hits = await state.store.search(name, query)
    for hit in hits:
        hit.payload = split_thumbnail(hit.payload)[0]
    return SearchResponse.model_validate({"results": [h.__dict__ for h in hits]})
