"""Request and response models of the HTTP API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.api.limits import Counted, Documented

Text = Annotated[str, Documented("max_text_chars")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextItem(_Request):
    text: Text


class ImageItem(_Request):
    image: str = Field(description="data: URI, plain base64, or http(s) URL when enabled")


class EmbeddingsRequest(_Request):
    model: str | None = Field(None, description="model id; optional when one model is loaded")
    input: (
        str
        | Annotated[
            list[str | TextItem | ImageItem], Field(fail_fast=True), Counted("max_items", "input")
        ]
    ) = Field(description="a text, a list of texts (or images with modality=image), or typed items")
    modality: Literal["text", "image"] | None = Field(
        None,
        description="how plain strings in `input` are read; default: as texts, except "
        "`data:image/...` URIs, which are images ('text' reads those as text too)",
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Documented("dimensions", "enum")] | None = Field(
        None, gt=0, description="must equal the model's dimension"
    )
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_token_arrays(cls, data: Any) -> Any:
        value = data.get("input") if isinstance(data, dict) else None
        if isinstance(value, list) and value and isinstance(value[0], int | list):
            raise ValueError("token id arrays are not supported: send strings or typed items")
        return data


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    filename: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    unknown_tokens: int | None = Field(
        None,
        description="tokens of the texts that the model's vocabulary does not know (they all "
        "embed alike); also the X-Unknown-Tokens header",
    )


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class TokenizerInfo(BaseModel):
    kind: str = Field(description="the tokenizer model: BPE, WordLevel, Unigram, WordPiece")
    vocabulary_size: int
    unknown_token: str | None = None
    known_words: list[str] | None = Field(
        None,
        description="word-level vocabularies: every word the model knows; any other word is "
        "one unknown token, so texts made of unknown words embed alike",
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "clipserve"
    dimension: int
    family: str
    modalities: list[str]
    runtime: str
    providers: dict[str, str]
    precision: dict[str, str]
    context_length: int | None = None
    image_size: int | None = None
    image_input: Literal["uint8", "float32"] | None = Field(
        None, description="pixels the served image tower takes (uint8: normalised on the device)"
    )
    templates: list[str] = Field(
        default_factory=list,
        description="prompt templates /v1/classify and label sets use when a request gives none",
    )
    tokenizer: TokenizerInfo | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorItem(BaseModel):
    index: int
    code: str
    message: str


class ErrorBody(BaseModel):
    type: str
    code: str
    message: str
    param: str | None = None
    items: list[ErrorItem] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
