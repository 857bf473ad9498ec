"""Hugging Face `CLIPModel` (and SigLIP) checkpoints, from a local folder or a hub id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from service.export.errors import ExportError
from service.export.hub import hub_reachable
from service.export.source import SourceModel
from service.manifest import ImagePreprocess, Scores, TextPreprocess

_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


class _ImageTower(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.vision = model.vision_model
        self.projection = getattr(model, "visual_projection", None)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision(pixel_values=pixel_values).pooler_output
        return self.projection(pooled) if self.projection is not None else pooled


class _TextTower(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.text = model.text_model
        self.projection = getattr(model, "text_projection", None)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pooled = self.text(input_ids=input_ids).pooler_output
        return self.projection(pooled) if self.projection is not None else pooled


def _looks_like_path(ref: str) -> bool:
    """A hub id is `name` or `namespace/name`; anything else is meant as a folder."""
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref


def _from_pretrained(ref: str, local_only: bool) -> tuple[Any, Any, Any]:
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(ref, local_files_only=local_only)
    image_processor = AutoImageProcessor.from_pretrained(ref, local_files_only=local_only)
    tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_only)
    return model, image_processor, tokenizer


def _load(ref: str) -> tuple[Any, Any, Any]:
    """A local folder, else a hub id from the local cache, else from the hub (if reachable)."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        try:
            model, ip, tok = _from_pretrained(str(folder), local_only=True)
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot load Hugging Face model folder {ref!r}: {exc}") from exc
    elif _looks_like_path(ref):
        raise ExportError(f"no such model folder: {ref!r}")
    else:
        try:
            model, ip, tok = _from_pretrained(ref, local_only=True)
        except (OSError, ValueError):
            if not hub_reachable():
                raise ExportError(
                    f"cannot load Hugging Face model {ref!r}: it is not in the local cache and "
                    "the hub cannot be reached (offline). Download it where there is network "
                    f"(`hf download {ref} --local-dir DIR`) and export hf:DIR"
                ) from None
            try:
                model, ip, tok = _from_pretrained(ref, local_only=False)
            except (OSError, ValueError) as exc:
                raise ExportError(f"cannot load Hugging Face model {ref!r}: {exc}") from exc
    if not tok.is_fast:
        raise ExportError(f"{ref}: a fast tokenizer (tokenizer.json) is needed")
    return model.eval(), ip, tok


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


def _size(value: object) -> int:
    """A processor size: an int, a dict or (transformers 5) a SizeDict with the same keys."""
    if isinstance(value, int):
        return value
    for key in ("shortest_edge", "height", "width"):
        found = _get(value, key)
        if isinstance(found, int | float | str) and found:
            return int(found)
    raise ExportError(f"cannot read an image size from {value!r}")


def _embedding_dim(model: Any) -> int:
    projection = getattr(model.config, "projection_dim", None)
    return int(projection) if projection else int(model.config.text_config.hidden_size)


def load_hf(ref: str) -> SourceModel:
    model, ip, tok = _load(ref)
    if model.config.model_type == "siglip2":
        raise ExportError(
            f"{ref}: SigLIP 2 NaFlex checkpoints take variable-size patch sequences "
            "(pixel_attention_mask, spatial_shapes), which this exporter does not handle yet"
        )
    family = "siglip" if "siglip" in model.config.model_type else "clip"
    cropped = bool(getattr(ip, "do_center_crop", False))
    crop = _size(ip.crop_size) if cropped else _size(ip.size)
    # CLIP processors resize the shortest edge, SigLIP's resize to height x width (squash)
    shortest = _get(ip.size, "shortest_edge") is not None
    image = ImagePreprocess(
        size=crop,
        resize="shortest" if shortest else "squash",
        resize_size=_size(ip.size),
        interpolation=_RESAMPLE.get(int(ip.resample), "bicubic"),  # type: ignore[arg-type]
        crop="center" if cropped else "none",
        crop_offset="floor",  # Hugging Face image processors floor the crop offset
        mean=[float(v) for v in ip.image_mean],
        std=[float(v) for v in ip.image_std],
    )
    text_cfg = model.config.text_config
    ctx = int(text_cfg.max_position_embeddings)
    eot = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eot
    tokenizer_json = tok.backend_tokenizer.to_str()
    kind = str(json.loads(tokenizer_json)["model"]["type"]).lower()
    # tokenizer.json carries Hugging Face's own normalizer (lowercase, whitespace): add nothing
    text = TextPreprocess(
        kind="sentencepiece" if kind == "unigram" else kind,  # type: ignore[arg-type]
        context_length=ctx,
        pad_id=int(pad),
        eot_id=int(eot) if eot is not None else None,
        lowercase=False,
        clean="none",
        pad_to_context=True,
    )

    def reference_pixels(images: list[Image.Image]) -> np.ndarray:
        out = ip(images=images, return_tensors="np")["pixel_values"]
        return np.asarray(out, dtype=np.float32)

    def reference_tokens(texts: list[str]) -> np.ndarray:
        enc = tok(texts, padding="max_length", truncation=True, max_length=ctx, return_tensors="np")
        return np.asarray(enc["input_ids"], dtype=np.int64)

    def features(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4 / 5

    return SourceModel(
        name=Path(ref).name,
        family=family,
        embedding_dim=_embedding_dim(model),
        image_tower=_ImageTower(model).eval(),
        text_tower=_TextTower(model).eval(),
        image=image,
        text=text,
        tokenizer_json=tokenizer_json,
        scores=Scores(
            logit_scale=float(model.logit_scale.exp().item()),
            logit_bias=float(model.logit_bias.item()) if family == "siglip" else None,
        ),
        reference_pixels=reference_pixels,
        reference_tokens=reference_tokens,
        reference_image=lambda x: features(model.get_image_features(pixel_values=x)),
        reference_text=lambda ids: features(model.get_text_features(input_ids=ids)),
        source={"kind": "hf", "ref": ref, "model_type": model.config.model_type},
    )
