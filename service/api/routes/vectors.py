"""What a point or a query becomes as a vector: an id is checked, a stored point's vector read,
texts and images embedded, all of a request's at once (routes for points, search and recommend
share this)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np

from service.api.deps import AppState
from service.api.errors import ApiError, ItemErrors
from service.api.routes.embeddings import check_texts, embed_image_sources
from service.api.schemas_store import PointIn, Query
from service.imaging import ImageError
from service.inputs import ImageSource
from service.registry import LoadedModel
from service.store.types import MAX_POINT_ID, CollectionInfo, PointId


def check_id(point_id: int | str) -> int | str:
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


def collection_model(state: AppState, info: CollectionInfo) -> LoadedModel:
    try:
        return state.registry.get(info.model)
    except LookupError:
        raise ApiError(
            400,
            "model_not_loaded",
            f"collection {info.name!r} uses model {info.model!r}, which this server has not loaded",
        ) from None


def _stored_id(item: PointIn | Query) -> int | str | None:
    """A query's point id names a stored point to take the vector of (an item's is its own)."""
    return item.id if isinstance(item, Query) else None


async def resolve_vectors(
    state: AppState, info: CollectionInfo, items: Sequence[PointIn | Query], param: str
) -> tuple[np.ndarray, dict[int, ImageSource]]:
    """The vector of every item or query, resolved together: stored points in one read, texts in
    one embedding call, images in one; each bad one is named by its index in `param`. With them,
    each image item's resolved image by item index (a URL fetched once), for thumbnails."""
    vectors = np.zeros((len(items), info.dimension), dtype=np.float32)
    sources: dict[int, ImageSource] = {}
    bad: list[tuple[int, ImageError | ApiError]] = []
    texts = [(i, it.text) for i, it in enumerate(items) if it.text is not None]
    images = [(i, it.image) for i, it in enumerate(items) if it.image is not None]
    stored: dict[int, PointId] = {}
    model = collection_model(state, info) if texts or images else None
    for i, it in enumerate(items):
        if (pid := _stored_id(it)) is not None:
            try:
                stored[i] = check_id(pid)
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
            vectors[[i for i, _ in images]], resolved = await embed_image_sources(
                state, model, [v for _, v in images], param
            )
            sources = {i: source for (i, _), source in zip(images, resolved, strict=True)}
        except ItemErrors as exc:
            bad += _unpacked(exc, [i for i, _ in images])
    if bad:
        raise ItemErrors(sorted(bad, key=lambda p: p[0]), param)
    if texts and model is not None:
        result = await state.embedder.embed_texts(model, [t for _, t in texts])
        vectors[[i for i, _ in texts]] = result.vectors
    return vectors, sources


def _unpacked(exc: ItemErrors, at: list[int]) -> list[tuple[int, ImageError | ApiError]]:
    """An ItemErrors' items again, each at `at[index]` (its index among all the items)."""
    return [
        (at[int(e["index"])], ApiError(exc.status, str(e["code"]), str(e["message"])))
        for e in exc.items or []
    ]


async def one_vector(state: AppState, info: CollectionInfo, query: Query, param: str) -> np.ndarray:
    """One query's vector; its problem is the request's error (no list of items)."""
    try:
        return (await resolve_vectors(state, info, [query], param))[0][0]
    except ItemErrors as exc:
        raise single_error(exc, param) from None


def single_error(exc: ItemErrors, param: str) -> ApiError:
    first = (exc.items or [{}])[0]
    return ApiError(exc.status, exc.code, str(first.get("message", exc.message)), param=param)
