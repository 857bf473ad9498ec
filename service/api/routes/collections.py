"""Collections of embeddings in Qdrant: create/get/delete; points: upsert, get (and thumbnail),
scroll, count, payload updates, delete. Searches are in `search.py`. Every payload answered
leaves out the thumbnail the service keeps in it (`service.thumbnails`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from qdrant_client import models
from starlette.convertors import Convertor, register_url_convertor

from service.api.deps import AppState, State
from service.api.errors import ApiError, ItemErrors
from service.api.responses import FastJSONRoute
from service.api.routes.vectors import check_id, collection_model, resolve_vectors, single_error
from service.api.schemas import ErrorResponse
from service.api.schemas_store import (
    NAME_PATTERN,
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
    ScrollPoint,
    ScrollRequest,
    ScrollResponse,
    Selection,
    SetPayload,
    UpsertRequest,
    UpsertResponse,
)
from service.embedder import DeadlineExceeded
from service.imaging import ImageError
from service.inputs import ImageSource, source_bytes
from service.registry import LoadedModel
from service.store.limits import PayloadLimits, has_ambiguous_number, payload_problem
from service.store.types import CollectionInfo, CollectionOptions, PointId, ScrollQuery
from service.thumbnails import THUMBNAIL_KEY, make_thumbnail, split_thumbnail

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
ERRORS: dict[int | str, dict[str, Any]] = {
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


@router.put(
    "/{name}",
    response_model=CollectionOut,
    status_code=200,
    responses={**ERRORS, 201: {"model": CollectionOut, "description": "created"}},
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


@router.get("/{name}", response_model=CollectionOut, responses=ERRORS)
async def get_collection(name: Name, state: State) -> CollectionOut:
    return _out(await state.store.collection(name))


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def delete_collection(name: Name, state: State) -> Response:
    await state.store.delete_collection(name)
    return Response(status_code=204)


def _limits(state: AppState) -> PayloadLimits:
    s = state.settings
    return PayloadLimits(s.max_payload_bytes, s.max_payload_depth, s.max_payload_keys)


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


@router.post("/{name}/points", response_model=UpsertResponse, responses=ERRORS)
async def upsert_points(
    name: Name, body: UpsertRequest, state: State, request: Request
) -> UpsertResponse:
    """All or nothing: if any item is bad, none is written and each bad item is listed.
    The answer comes only after Qdrant has written the points."""
    payloads = await _checked_payloads(
        state,
        request,
        [it.payload for it in body.items],
        lambda raw: [item.get("payload") for item in raw["items"]],
        "items",
    )
    info = await state.store.collection(name, count=False)
    ids = [check_id(it.id) if it.id is not None else content_id(it) for it in body.items]
    vectors, sources = await resolve_vectors(state, info, body.items, "items")
    if info.options.thumbnail_size and sources:
        model = collection_model(state, info)
        payloads = await _with_thumbnails(
            state, model, info.options.thumbnail_size, payloads, sources
        )
    await state.store.upsert(name, ids, vectors, payloads)
    return UpsertResponse(ids=ids)


@router.post("/{name}/points/exists", response_model=ExistingIds, responses=ERRORS)
async def existing_points(name: Name, body: PointIds, state: State) -> ExistingIds:
    """Which of these ids are stored (lets a bulk indexer resume without re-sending)."""
    await state.store.collection(name, count=False)
    found = await state.store.existing_ids(name, [check_id(i) for i in body.ids])
    return ExistingIds(ids=found)


@router.get("/{name}/points/{point_id:point_id}", response_model=PointOut, responses=ERRORS)
async def get_point(name: Name, point_id: str, state: State, with_vector: bool = False) -> PointOut:
    await state.store.collection(name, count=False)
    p = await state.store.get_point(name, check_id(point_id), with_vector)
    return PointOut(id=p.id, payload=split_thumbnail(p.payload)[0], vector=p.vector)


@router.get(
    "/{name}/points/{point_id:point_id}/thumbnail",
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "a JPEG"}},
)
async def get_thumbnail(name: Name, point_id: str, state: State) -> Response:
    """The point's thumbnail (collections created with `thumbnail_size`), as a JPEG."""
    await state.store.collection(name, count=False)
    p = await state.store.get_point(name, check_id(point_id), with_vector=False)
    thumbnail = split_thumbnail(p.payload)[1]
    if thumbnail is None:
        raise ApiError(
            404,
            "thumbnail_not_found",
            f"point {p.id!r} has no thumbnail: only images upserted into a collection created "
            "with thumbnail_size have one",
        )
    return Response(base64.b64decode(thumbnail), media_type="image/jpeg")


@router.delete("/{name}/points/{point_id:point_id}", status_code=204, responses=ERRORS)
async def delete_point(name: Name, point_id: str, state: State) -> Response:
    await state.store.collection(name, count=False)
    await state.store.delete_points(name, [check_id(point_id)], None)
    return Response(status_code=204)


@router.post("/{name}/points/delete", status_code=204, responses=ERRORS)
async def delete_points(name: Name, body: Selection, state: State) -> Response:
    """By ids or by payload filter; answered once the points are gone."""
    await state.store.collection(name, count=False)
    ids = [check_id(i) for i in body.ids] if body.ids is not None else None
    await state.store.delete_points(name, ids, body.filter)
    return Response(status_code=204)


def _ids(body: Selection) -> list[PointId] | None:
    return [check_id(i) for i in body.ids] if body.ids is not None else None


@router.post("/{name}/points/payload", status_code=204, responses=ERRORS)
async def set_payload(name: Name, body: SetPayload, state: State, request: Request) -> Response:
    """Qdrant's set payload: these keys are written into each payload, the others kept."""
    return await _put_payload(name, body, state, request, overwrite=False)


@router.put("/{name}/points/payload", status_code=204, responses=ERRORS)
async def overwrite_payload(
    name: Name, body: SetPayload, state: State, request: Request
) -> Response:
    """Qdrant's overwrite payload: each payload becomes this one."""
    return await _put_payload(name, body, state, request, overwrite=True)


async def _put_payload(
    name: str, body: SetPayload, state: AppState, request: Request, overwrite: bool
) -> Response:
    info = await state.store.collection(name, count=False)
    try:
        checked = await _checked_payloads(
            state, request, [body.payload], lambda raw: [raw["payload"]], "payload"
        )
    except ItemErrors as exc:
        raise single_error(exc, "payload") from None
    payload = checked[0] or {}
    keep = (THUMBNAIL_KEY,) if info.options.thumbnail_size else ()  # the service's, not the user's
    await state.store.set_payload(
        name, _ids(body), body.filter, payload, overwrite, _limits(state), keep
    )
    return Response(status_code=204)


@router.post("/{name}/points/payload/delete", status_code=204, responses=ERRORS)
async def delete_payload(name: Name, body: DeletePayload, state: State) -> Response:
    """Qdrant's delete payload: these keys leave each payload."""
    await state.store.collection(name, count=False)
    await state.store.delete_payload(name, _ids(body), body.filter, body.keys)
    return Response(status_code=204)


@router.post("/{name}/points/scroll", response_model=ScrollResponse, responses=ERRORS)
async def scroll(name: Name, body: ScrollRequest, state: State) -> ScrollResponse:
    """Points in id order, a page at a time (`offset`: the last page's `next_page_offset`), or
    ordered by an indexed payload key (`order_by`, paged with its `start_from`)."""
    order_by = body.order_by
    page = await state.store.scroll(
        name,
        ScrollQuery(
            filter=body.filter,
            limit=body.limit,
            offset=check_id(body.offset) if body.offset is not None else None,
            order_by=models.OrderBy(key=order_by) if isinstance(order_by, str) else order_by,
            with_payload=body.with_payload,
            with_vectors=body.with_vectors,
        ),
    )
    points = [
        ScrollPoint(
            id=p.id,
            payload=split_thumbnail(p.payload)[0],
            vector=p.vector,
            order_value=p.order_value,
        )
        for p in page.points
    ]
    return ScrollResponse(points=points, next_page_offset=page.next_offset)


@router.post("/{name}/points/count", response_model=CountResponse, responses=ERRORS)
async def count(name: Name, body: CountRequest, state: State) -> CountResponse:
    await state.store.collection(name, count=False)
    return CountResponse(count=await state.store.count(name, body.filter, body.exact))
