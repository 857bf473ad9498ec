"""The model manifest (`clipserve.json`): what a model *is*, independent of how it is served.

Written by the exporter, read by the runner, the preprocessors and the zero-shot scorer. It is a
file on disk, so it is validated with pydantic like any other input at the edge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_FILE = "clipserve.json"
FORMAT_VERSION = 1

Tower = Literal["image", "text"]
TOWERS: tuple[Tower, ...] = ("image", "text")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Strict):
    """One ONNX input or output; -1 marks a dynamic axis (always the batch axis first)."""

    name: str
    dtype: Literal["float32", "float16", "int64", "int32", "uint8"]
    shape: list[int]


class TowerSpec(_Strict):
    """One encoder in Triton layout: `<path>/1/model.onnx` beside `<path>/config.pbtxt`."""

    path: str
    inputs: list[TensorSpec]
    output: TensorSpec
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    # True when the ONNX output is already L2-normalised; the runner normalises either way.
    normalized: bool = False
    # A text tower that takes sequences of any length and gives the same embeddings when a
    # batch is cut after its longest row (causal attention, pooled at the end-of-text token):
    # the onnxruntime runner sends no padding beyond that (checked at export, see fusion.py).
    trim_padding: bool = False
    # The same image encoder fed uint8 NHWC pixels and normalising them inside the graph: a
    # quarter of the bytes to copy to the device and no float work on the host (the fast path).
    uint8_variant: TowerSpec | None = None
    # The same encoder with int8 weights, quantized dynamically for CPUs (`export --quantize`),
    # served with `precision=int8`; an image tower's int8 variant has its own uint8 variant.
    int8_variant: TowerSpec | None = None

    def graphs(self) -> list[TowerSpec]:
        """This graph and all its variants, each in a Triton model folder of its own."""
        found = [self]
        for variant in (self.uint8_variant, self.int8_variant):
            if variant is not None:
                found += variant.graphs()
        return found

    def onnx_file(self, model_dir: Path) -> Path:
        return model_dir / self.path / "1" / "model.onnx"

    def config_file(self, model_dir: Path) -> Path:
        return model_dir / self.path / "config.pbtxt"


class ImagePreprocess(_Strict):
    """Exactly the source model's image pipeline, so our pixels match its processor's."""

    size: int = Field(gt=0, description="final square side fed to the model")
    resize: Literal["shortest", "squash"] = "shortest"
    # target of the shortest side before the centre crop ("shortest" mode); defaults to `size`
    resize_size: int | None = None
    interpolation: Literal["bicubic", "bilinear", "nearest", "lanczos"] = "bicubic"
    crop: Literal["center", "none"] = "center"
    # torchvision rounds the centre-crop offset, Hugging Face floors it; odd margins differ by 1 px
    crop_offset: Literal["round", "floor"] = "round"
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    # colour the alpha channel is composited onto
    background: list[int] = Field(default=[255, 255, 255], min_length=3, max_length=3)
    # transparency: "composite" onto `background` (transformers' convert_to_rgb, the default for
    # manifests written before this field), or "drop" the alpha channel and keep the colour under
    # it (open_clip: PIL's convert("RGB"))
    alpha: Literal["composite", "drop"] = "composite"
    # where the conversion to RGB happens: "decode" (transformers: convert, then resize) or
    # "last" (open_clip: resize and crop in the file's own mode, then convert; PIL resizes palette
    # and 1-bit images with NEAREST and RGBA / LA with premultiplied alpha)
    to_rgb: Literal["decode", "last"] = "decode"


class TextPreprocess(_Strict):
    tokenizer: str = "tokenizer.json"
    kind: Literal["bpe", "sentencepiece", "wordpiece", "wordlevel"] = "bpe"
    context_length: int = Field(gt=1)
    pad_id: int = 0
    eot_id: int | None = Field(default=None, description="kept as the last token on truncation")
    lowercase: bool = True
    # "clip": ftfy-style fixes, HTML unescape and whitespace collapse as open_clip does;
    # "canonicalize": open_clip's SigLIP cleaning (the same, then punctuation and "_" removed,
    # lower-cased); "siglip": transformers' SiglipTokenizer.canonicalize_text (punctuation
    # removed, whitespace collapsed; "▁" is a space)
    clean: Literal["clip", "whitespace", "none", "canonicalize", "siglip"] = "whitespace"
    # Always pad to context_length (OpenCLIP's text tower wants exactly that many tokens).
    pad_to_context: bool = True
    # the source tokenizer's padding side (Gemma-style tokenizers pad on the left)
    padding_side: Literal["right", "left"] = "right"
    # True when the text tower takes an `attention_mask` input: the call that reproduces the
    # family as trained uses it. CLIP and SigLIP were trained without one (big_vision's text
    # encoder has no mask; transformers' conversion scripts verify logits on input_ids alone)
    attention_mask: bool = False


class Scores(_Strict):
    """How zero-shot scores are made: CLIP softmax(scale*cos); SigLIP sigmoid(scale*cos+bias)."""

    logit_scale: float
    logit_bias: float | None = None


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str
    family: Literal["clip", "siglip"]
    embedding_dim: int = Field(gt=0)
    towers: dict[Tower, TowerSpec]
    image: ImagePreprocess | None = None
    text: TextPreprocess | None = None
    scores: Scores
    # prompt templates this model answers best to, for zero-shot classification ("{}": label)
    templates: list[str] | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    export: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, Any] = Field(default_factory=dict)
    card: dict[str, Any] = Field(default_factory=dict)

    def write(self, model_dir: Path) -> Path:
        path = model_dir / MANIFEST_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path


class ModelFolderError(Exception):
    """A model folder that cannot be served; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def load_manifest(model_dir: Path) -> Manifest:
    """Read and check a model folder without loading any weights: fail early, name the file."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise ModelFolderError(path, "missing manifest")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(path, f"not valid JSON ({exc})") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ModelFolderError(path, f"invalid manifest: {problems}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise ModelFolderError(path, f"unsupported format_version {manifest.format_version}")
    if not manifest.towers:
        raise ModelFolderError(path, "manifest lists no towers")
    for tower, spec in manifest.towers.items():
        for kind in spec.graphs():
            onnx = kind.onnx_file(model_dir)
            if not onnx.is_file():
                raise ModelFolderError(onnx, f"missing ONNX file of the {tower} tower")
            if onnx.stat().st_size == 0:
                raise ModelFolderError(onnx, "empty ONNX file")
    for tower, spec in manifest.towers.items():
        for graph in spec.graphs():
            variant = graph.uint8_variant
            if variant is not None and (
                tower != "image" or [i.dtype for i in variant.inputs] != ["uint8"]
            ):
                raise ModelFolderError(path, f"uint8_variant of the {tower} tower: one uint8 input")
        int8 = spec.int8_variant
        if int8 is not None and (int8.precision != "int8" or int8.inputs != spec.inputs):
            raise ModelFolderError(
                path, f"int8_variant of the {tower} tower: precision int8, the tower's inputs"
            )
    if "image" in manifest.towers and manifest.image is None:
        raise ModelFolderError(path, "an image tower needs an 'image' preprocessing section")
    if "text" in manifest.towers:
        if manifest.text is None:
            raise ModelFolderError(path, "a text tower needs a 'text' preprocessing section")
        names = [i.name for i in manifest.towers["text"].inputs]
        if manifest.text.attention_mask != ("attention_mask" in names):
            raise ModelFolderError(
                path,
                f"text.attention_mask is {manifest.text.attention_mask}, text tower inputs "
                f"are {names}",
            )
        tok = model_dir / manifest.text.tokenizer
        if not tok.is_file():
            raise ModelFolderError(tok, "missing tokenizer file")
    return manifest
