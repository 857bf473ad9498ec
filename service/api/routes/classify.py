"""Zero-shot classification (`POST /v1/classify`) and stored label sets (`/v1/label-sets`)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Response

from service.api.deps import AppState, State
from service.api.errors import ApiError
from service.api.responses import FastJSONRoute
from service.api.routes.embeddings import check_texts, embed_image_strings, unknown_tokens_header
from service.api.schemas import ErrorResponse
from service.api.schemas_store import (
    NAME_PATTERN,
    ClassifyRequest,
    ClassifyResponse,
    LabelSetCreate,
    LabelSetList,
    LabelSetOut,
)
from service.classify import DEFAULT_TEMPLATES, prototypes, scores, top_k
from service.registry import LoadedModel
from service.store.types import LabelSet

router = APIRouter(prefix="/v1", tags=["classification"], route_class=FastJSONRoute)

SetName = Annotated[str, Path(pattern=NAME_PATTERN, description="label set name")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 422, 429, 503)
}


def templates_for(model: LoadedModel, given: list[str] | None) -> list[str]:
    """The request's templates, else the model's own, else a general-purpose ensemble."""
    return given or model.manifest.templates or DEFAULT_TEMPLATES


async def unknown_label_tokens(
    state: AppState, model: LoadedModel, labels: list[str]
) -> dict[str, str]:
    """The X-Unknown-Tokens header: tokens of the labels the model's vocabulary does not know
    (such labels share one embedding and score alike)."""
    return unknown_tokens_header(await state.embedder.unknown_tokens(model, labels))


async def label_prototypes(
    state: AppState, model: LoadedModel, labels: list[str], templates: list[str]
) -> np.ndarray:
    """Limits first (labels and templates are texts; every prompt is embedded), then the
    prompts through the text cache and the queue."""
    check_texts(state, labels, "labels", allow_blank=True)
    check_texts(state, templates, "templates", allow_blank=True)
    prompts, limit = len(labels) * len(templates), state.settings.max_prompts
    if prompts > limit:
        raise ApiError(
            413,
            "too_many_prompts",
            f"{len(labels)} labels x {len(templates)} templates = {prompts} prompts, "
            f"limit {limit} per request",
            param="labels",
        )

    async def encode(texts: list[str]) -> np.ndarray:
        return (await state.embedder.embed_texts(model, texts)).vectors

    return await prototypes(model.name, labels, templates, state.text_cache, encode)


@router.post("/classify", response_model=ClassifyResponse, responses=_ERRORS)
async def classify(body: ClassifyRequest, state: State, response: Response) -> ClassifyResponse:
    if body.label_set is not None:
        label_set = await state.store.label_set(body.label_set)
        model = state.registry.get(body.model or label_set.model)
        if model.name != label_set.model:
            raise ApiError(
                400,
                "model_mismatch",
                f"label set {label_set.name!r} belongs to model {label_set.model!r}",
                param="model",
            )
        labels, protos = label_set.labels, label_set.prototypes
    else:
        model = state.registry.get(body.model)
        labels = list(body.labels or [])
        protos = await label_prototypes(state, model, labels, templates_for(model, body.templates))
        response.headers.update(await unknown_label_tokens(state, model, labels))
    images = await embed_image_strings(state, model, body.images, "images")
    probs = scores(model.manifest, images, protos)
    return ClassifyResponse.model_validate(
        {"model": model.name, "results": top_k(labels, probs, body.top_k)}
    )


def _label_set_out(ls: LabelSet, with_labels: bool) -> LabelSetOut:
    return LabelSetOut(
        name=ls.name,
        model=ls.model,
        count=len(ls.labels),
        templates=ls.templates,
        labels=ls.labels if with_labels else None,
    )


@router.get("/label-sets", response_model=LabelSetList, responses=_ERRORS)
async def list_label_sets(state: State) -> LabelSetList:
    return LabelSetList(
        label_sets=[
            LabelSetOut(
                name=str(m["name"]),
                model=str(m["model"]),
                count=int(m["count"]),
                templates=list(m["templates"]),
            )
            for m in await state.store.list_label_sets()
        ]
    )


@router.put("/label-sets/{name}", response_model=LabelSetOut, responses=_ERRORS)
async def put_label_set(
    name: SetName, body: LabelSetCreate, state: State, response: Response
) -> LabelSetOut:
    model = state.registry.get(body.model)
    templates = templates_for(model, body.templates)
    labels = list(dict.fromkeys(body.labels))
    protos = await label_prototypes(state, model, labels, templates)
    response.headers.update(await unknown_label_tokens(state, model, labels))
    label_set = LabelSet(name, model.name, labels, templates, protos)
    await state.store.put_label_set(label_set)
    return _label_set_out(label_set, with_labels=False)


@router.get("/label-sets/{name}", response_model=LabelSetOut, responses=_ERRORS)
async def get_label_set(name: SetName, state: State, with_labels: bool = False) -> LabelSetOut:
    return _label_set_out(await state.store.label_set(name), with_labels)


@router.delete("/label-sets/{name}", status_code=204, responses=_ERRORS)
async def delete_label_set(name: SetName, state: State) -> Response:
    await state.store.delete_label_set(name)
    return Response(status_code=204)
