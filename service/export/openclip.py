"""open_clip checkpoints: any model config + pretrained tag, or a local checkpoint file.

Covers OpenAI CLIP, LAION / DataComp / MetaCLIP weights and the timm-tower families
(MobileCLIP, ViTamin, SigLIP through open_clip) as far as their tokenizer is open_clip's BPE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from service.export.clip_bpe import clip_bpe_tokenizer
from service.export.errors import ExportError
from service.export.source import SourceModel
from service.manifest import ImagePreprocess, Scores, TextPreprocess


class _Encode(torch.nn.Module):
    """One of open_clip's `encode_image` / `encode_text`, unnormalised, as a module to export."""

    def __init__(self, model: Any, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = getattr(self.model, self.method)(x, normalize=False)
        return out


def _create(name: str, pretrained: str | None) -> tuple[Any, Any]:
    import open_clip

    if name not in open_clip.list_models():
        raise ExportError(f"open_clip has no model config {name!r}")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    except (RuntimeError, OSError, ValueError) as exc:
        local = pretrained is not None and Path(pretrained).is_file()
        hint = "" if local else " (offline? download it where there is network, pass the file)"
        raise ExportError(f"cannot load open_clip {name}:{pretrained}{hint}: {exc}") from exc
    return model.eval(), preprocess


def image_preprocess(name: str, model: Any) -> ImagePreprocess:
    """open_clip's image transform (`model.visual.preprocess_cfg`) in our manifest's terms."""
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else int(cfg["size"][0])
    mode = cfg.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise ExportError(f"{name}: resize mode {mode!r} is not supported")
    return ImagePreprocess(
        size=size,
        resize=mode,
        resize_size=size,
        interpolation=cfg.get("interpolation", "bicubic"),
        crop="center" if mode == "shortest" else "none",
        crop_offset="round",  # torchvision's CenterCrop rounds the offset
        mean=[float(v) for v in cfg["mean"]],
        std=[float(v) for v in cfg["std"]],
    )


def load_open_clip(ref: str) -> SourceModel:
    import open_clip

    name, _, pretrained = ref.partition(":")
    model, preprocess = _create(name, pretrained or None)
    simple = open_clip.get_tokenizer(name)
    if not hasattr(simple, "bpe_ranks"):
        raise ExportError(f"{name}: only open_clip's BPE tokenizer can be exported for now")
    image = image_preprocess(name, model)
    ctx = int(simple.context_length)
    text = TextPreprocess(
        kind="bpe",
        context_length=ctx,
        pad_id=0,
        eot_id=int(simple.eot_token_id),
        lowercase=True,
        clean="clip",
        pad_to_context=True,
    )
    bias = getattr(model, "logit_bias", None)

    def reference_pixels(images: list[Image.Image]) -> np.ndarray:
        return torch.stack([preprocess(img) for img in images]).numpy()

    def reference_tokens(texts: list[str]) -> np.ndarray:
        return np.asarray(simple(texts), dtype=np.int64)

    return SourceModel(
        name=name,
        family="siglip" if bias is not None else "clip",
        embedding_dim=int(model.text_projection.shape[1])
        if hasattr(model, "text_projection") and model.text_projection is not None
        else int(model.encode_text(torch.zeros(1, ctx, dtype=torch.long)).shape[1]),
        image_tower=_Encode(model, "encode_image").eval(),
        text_tower=_Encode(model, "encode_text").eval(),
        image=image,
        text=text,
        tokenizer_json=clip_bpe_tokenizer(simple).to_str(),
        scores=Scores(
            logit_scale=float(model.logit_scale.exp().item()),
            logit_bias=float(bias.item()) if bias is not None else None,
        ),
        reference_pixels=reference_pixels,
        reference_tokens=reference_tokens,
        reference_image=lambda x: model.encode_image(x),
        reference_text=lambda ids: model.encode_text(ids),
        source={"kind": "open_clip", "model": name, "pretrained": pretrained or None},
    )
