"""`POST /v1/embeddings` (OpenAI-compatible, texts and images) and `POST /v1/embed/images`."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile

from service.api.deps import AppState, State
from service.api.errors import ApiError, ItemErrors
from service.api.limits import check_count
from service.api.responses import FastJSON, FastJSONRoute
from service.api.schemas import EmbeddingsRequest, EmbeddingsResponse, ErrorResponse, ImageItem
from service.embedder import ImageBatchError
from service.imaging import ImageError
from service.inputs import ImageSource, image_sources
from service.registry import LoadedModel

router = APIRouter(prefix="/v1", tags=["embeddings"], route_class=FastJSONRoute)

# Tokens of the request's texts that the model's vocabulary does not know: a word-level
# vocabulary maps every unknown word to one token, so such texts embed alike (also
# `usage.unknown_tokens` and the `clipserve_unknown_tokens_total` metric).
UNKNOWN_TOKENS_HEADER = "X-Unknown-Tokens"

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 422, 429, 503)
}


def check_items(state: AppState, count: int, param: str = "input") -> None:
    check_count(count, state.settings.max_items, param)


def check_texts(
    state: AppState,
    texts: Sequence[str],
    param: str = "input",
    at: Sequence[int] | None = None,
    allow_blank: bool = False,
) -> None:
    """Every text (or label, or template) too long or empty, named by its index in the request
    (`at`: the request index of each text, when `texts` are a part of the items); before any of
    them is cleaned or tokenised. Labels and templates may be blank (`allow_blank`): each is
    only a part of the prompt that is embedded."""
    limit = state.settings.max_text_chars
    bad: list[tuple[int, ImageError | ApiError]] = []
    for i, t in enumerate(texts):
        if len(t) > limit:
            bad.append(
                (i, ApiError(413, "text_too_long", f"text has {len(t)} characters, limit {limit}"))
            )
        elif not allow_blank and not t.strip():  # the start and end tokens alone: no meaning
            bad.append((i, ApiError(400, "empty_text", "text is empty: there is nothing to embed")))
    if bad:
        raise ItemErrors([(i if at is None else at[i], e) for i, e in bad], param)


def is_image_uri(value: str) -> bool:
    """A `data:image/...` URI is never meant as text (a client that forgot
    `"modality": "image"` sends one as a plain string): it is read as an image."""
    return value[:11].lower() == "data:image/"


def unknown_tokens_header(count: int) -> dict[str, str]:
    return {UNKNOWN_TOKENS_HEADER: str(count)}


async def embed_image_strings(
    state: AppState, model: LoadedModel, values: list[str], param: str = "input"
) -> np.ndarray:
    """Resolve (data URI / base64 / URL) and embed images; every bad item is reported by index."""
    return (await embed_image_sources(state, model, values, param))[0]


async def embed_image_sources(
    state: AppState, model: LoadedModel, values: list[str], param: str = "input"
) -> tuple[np.ndarray, list[ImageSource]]:
    """`embed_image_strings`, and the resolved images (a URL is fetched once) for a caller that
    needs their bytes too (thumbnails)."""
    blobs: list[tuple[int, ImageSource]] = []
    bad: list[tuple[int, ImageError | ApiError]] = []
    for i, source in enumerate(await image_sources(values, state.image_sources, state.http)):
        if isinstance(source, ImageError):
            bad.append((i, source))
        else:
            blobs.append((i, source))
    vectors = np.empty((0, model.dim), dtype=np.float32)
    if blobs:
        try:
            vectors = await state.embedder.embed_images(model, [b for _, b in blobs])
        except ImageBatchError as exc:
            bad += [(blobs[i][0], err) for i, err in exc.errors]
    if bad:
        raise ItemErrors(sorted(bad, key=lambda pair: pair[0]), param)
    return vectors, [b for _, b in blobs]


async def embed_image_blobs(
    state: AppState, model: LoadedModel, blobs: list[bytes], param: str
) -> np.ndarray:
    try:
        return await state.embedder.embed_images(model, blobs)
    except ImageBatchError as exc:
        raise ItemErrors(list(exc.errors), param) from None


def _encode(vectors: np.ndarray, encoding_format: str) -> list[Any]:
    if encoding_format == "base64":
        le = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in le]
    return list(vectors)


def embeddings_body(
    model: LoadedModel,
    vectors: np.ndarray,
    tokens: int,
    encoding_format: str,
    filenames: list[str] | None = None,
) -> dict[str, Any]:
    data = []
    for i, emb in enumerate(_encode(vectors, encoding_format)):
        item: dict[str, Any] = {"object": "embedding", "index": i, "embedding": emb}
        if filenames is not None:
            item["filename"] = filenames[i]
        data.append(item)
    return {
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.post("/embeddings", response_model=EmbeddingsResponse, responses=_ERRORS)
async def create_embeddings(body: EmbeddingsRequest, state: State) -> FastJSON:
    model = state.registry.get(body.model)
    if body.dimensions is not None and body.dimensions != model.dim:
        raise ApiError(
            400,
            "unsupported_dimensions",
            f"model {model.name!r} embeds in {model.dim} dimensions; CLIP embeddings cannot be "
            "shortened",
            param="dimensions",
        )
    items = [body.input] if isinstance(body.input, str) else body.input  # counted already
    texts: list[tuple[int, str]] = []
    images: list[tuple[int, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            as_image = body.modality == "image" or (body.modality is None and is_image_uri(item))
            (images if as_image else texts).append((i, item))
        elif isinstance(item, ImageItem):
            images.append((i, item.image))
        else:
            texts.append((i, item.text))
    vectors = np.empty((len(items), model.dim), dtype=np.float32)
    tokens = unknown = 0
    if texts:
        check_texts(state, [t for _, t in texts], at=[i for i, _ in texts])
        result = await state.embedder.embed_texts(model, [t for _, t in texts])
        vectors[[i for i, _ in texts]] = result.vectors
        tokens, unknown = result.tokens, result.unknown_tokens
    if images:
        try:
            img_vectors = await embed_image_strings(state, model, [v for _, v in images])
        except ItemErrors as exc:  # report the indices of the whole request
            for entry in exc.items or []:
                entry["index"] = images[int(entry["index"])][0]
            raise
        vectors[[i for i, _ in images]] = img_vectors
    content = embeddings_body(model, vectors, tokens, body.encoding_format)
    content["usage"]["unknown_tokens"] = unknown
    return FastJSON(content, headers=unknown_tokens_header(unknown))


@router.post("/embed/images", response_model=EmbeddingsResponse, responses=_ERRORS)
async def embed_image_files(
    state: State,
    files: Annotated[list[UploadFile], File(description="one or many image files")],
    model: Annotated[str | None, Form()] = None,
    encoding_format: Annotated[str, Form(pattern="^(float|base64)$")] = "float",
) -> FastJSON:
    loaded = state.registry.get(model)
    check_items(state, len(files), "files")
    blobs: list[bytes] = []
    bad: list[tuple[int, ImageError | ApiError]] = []
    for i, upload in enumerate(files):
        data = await upload.read(state.settings.max_image_bytes + 1)
        if len(data) > state.settings.max_image_bytes:
            bad.append(
                (i, ImageError("image_too_large", f"file {upload.filename!r} is too large", 413))
            )
        blobs.append(data)
    if bad:
        raise ItemErrors(bad, "files")
    vectors = await embed_image_blobs(state, loaded, blobs, "files")
    names = [f.filename or f"file{i}" for i, f in enumerate(files)]
    return FastJSON(embeddings_body(loaded, vectors, 0, encoding_format, names))
