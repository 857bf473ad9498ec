"""`GET /v1/models`: what is loaded, in OpenAI's list shape plus what a CLIP client needs."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import State
from service.api.responses import FastJSONRoute
from service.api.routes.classify import templates_for
from service.api.schemas import ErrorResponse, ModelCard, ModelList, TokenizerInfo
from service.registry import LoadedModel

router = APIRouter(prefix="/v1", tags=["models"], route_class=FastJSONRoute)


def model_card(model: LoadedModel) -> ModelCard:
    m = model.manifest
    return ModelCard(
        id=model.name,
        dimension=m.embedding_dim,
        family=m.family,
        modalities=sorted(model.runners),
        runtime=next(iter(model.runners.values())).runtime,
        providers={tower: r.provider for tower, r in model.runners.items()},
        precision={tower: r.spec.precision for tower, r in model.runners.items()},
        context_length=m.text.context_length if m.text else None,
        image_size=m.image.size if m.image else None,
        image_input=None if model.images is None else model.images.input_dtype,
        templates=templates_for(model, None),
        tokenizer=None
        if model.tokenizer is None
        else TokenizerInfo(
            kind=model.tokenizer.vocabulary.kind,
            vocabulary_size=model.tokenizer.vocabulary.size,
            unknown_token=model.tokenizer.vocabulary.unknown_token,
            known_words=model.tokenizer.vocabulary.known_words,
        ),
    )


@router.get("/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    return ModelList(data=[model_card(m) for m in state.registry.models.values()])


@router.get(
    "/models/{model_id}", response_model=ModelCard, responses={404: {"model": ErrorResponse}}
)
async def get_model(model_id: str, state: State) -> ModelCard:
    return model_card(state.registry.get(model_id))
