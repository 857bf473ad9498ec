"""open_clip checkpoints: any model config + pretrained tag, or a local checkpoint file.

Covers OpenAI CLIP, LAION / DataComp / MetaCLIP weights and the timm-tower families (MobileCLIP,
ViTamin, ...) with open_clip's BPE tokenizer, and the configs that name a Hugging Face tokenizer
(`hf_tokenizer_name`: SigLIP and SigLIP 2 through open_clip), offline from a local folder.
Preprocessing follows open_clip's transform: resize and crop in the file's own mode, then
convert("RGB"), which drops alpha.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from service.export.clip_bpe import clip_bpe_tokenizer
from service.export.errors import ExportError
from service.export.hf import tokenizer_rules
from service.export.hub import cache_only, hub_reachable
from service.export.source import SourceModel
from service.manifest import ImagePreprocess, Scores, TextPreprocess

# open_clip's `clean` tokenizer argument -> our cleaning mode and lower-casing
_CLEAN = {
    "lower": ("clip", True),
    "whitespace": ("clip", False),
    "canonicalize": ("canonicalize", True),
}


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
    local = pretrained is not None and Path(pretrained).is_file()
    offline = pretrained is not None and not local and not hub_reachable()
    try:
        with cache_only() if offline else nullcontext():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained
            )
    except (RuntimeError, OSError, ValueError) as exc:
        if offline:
            raise ExportError(
                f"cannot load open_clip {name}:{pretrained}: its weights are not in the local "
                "cache and the hub cannot be reached (offline). Download the checkpoint where "
                f"there is network and export open_clip:{name}:/path/to/checkpoint"
            ) from exc
        hint = "" if local else " (download it where there is network, pass the file)"
        raise ExportError(f"cannot load open_clip {name}:{pretrained}{hint}: {exc}") from exc
    return model.eval(), preprocess


def image_preprocess(name: str, model: Any) -> ImagePreprocess:
    """open_clip's image transform (`model.visual.preprocess_cfg`) in our manifest's terms
    (also what training.train_default trains on)."""
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
        alpha="drop",  # convert("RGB") after resize and crop: the colour under alpha stays
        to_rgb="last",
    )


def _clean(name: str, kwargs: dict[str, Any], default: str) -> tuple[str, bool]:
    clean = str(kwargs.get("clean", default))
    if clean not in _CLEAN:
        raise ExportError(f"{name}: open_clip tokenizer clean={clean!r} is not supported")
    return _CLEAN[clean]


def _bpe_tokenizer(
    name: str, text_cfg: dict[str, Any], ctx: int
) -> tuple[Any, str, TextPreprocess]:
    """open_clip's own SimpleTokenizer (BPE), with the config's `tokenizer_kwargs` honoured."""
    import open_clip

    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    if set(kwargs) - {"clean"}:
        raise ExportError(f"{name}: tokenizer_kwargs {sorted(set(kwargs) - {'clean'})} unsupported")
    try:
        simple = open_clip.get_tokenizer(name, context_length=ctx)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{name}: open_clip cannot build its tokenizer: {exc}") from None
    if not hasattr(simple, "bpe_ranks"):
        raise ExportError(f"{name}: open_clip's {type(simple).__name__} cannot be exported")
    clean, lowercase = _clean(name, kwargs, "lower")
    text = TextPreprocess(
        kind="bpe",
        context_length=ctx,
        pad_id=0,
        eot_id=int(simple.eot_token_id),
        lowercase=lowercase,
        clean=clean,  # type: ignore[arg-type]
        pad_to_context=True,
    )
    return simple, clip_bpe_tokenizer(simple).to_str(), text


def _hf_tokenizer(
    name: str, hf_name: str, text_cfg: dict[str, Any], ctx: int, folder: Path | None
) -> tuple[Any, str, TextPreprocess]:
    """open_clip's HFTokenizer on the Hugging Face tokenizer the config names, or on a local
    folder standing in for the hub (`folder`), with the config's `tokenizer_kwargs`."""
    from open_clip.tokenizer import HFTokenizer

    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    if text_cfg.get("tokenizer_mode") or kwargs.get("tokenizer_mode"):
        raise ExportError(f"{name}: open_clip tokenizer_mode is not supported")
    if kwargs.get("strip_sep_token"):
        raise ExportError(f"{name}: open_clip strip_sep_token is not supported")
    source = str(folder) if folder is not None else hf_name

    def make(**extra: Any) -> Any:
        return HFTokenizer(source, context_length=ctx, **kwargs, **extra)

    try:
        try:
            wrapper = make(local_files_only=True)
        except OSError:
            if folder is not None:
                raise
            if not hub_reachable():
                raise ExportError(
                    f"{name} uses the Hugging Face tokenizer {hf_name!r}, which is not in the "
                    "local cache and the hub cannot be reached (offline): download it where "
                    f"there is network (`hf download {hf_name} --local-dir DIR`) and export "
                    "with --tokenizer DIR"
                ) from None
            wrapper = make()
    except (OSError, ValueError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{name}: cannot load tokenizer {source!r}: {reason}") from None
    if not wrapper.tokenizer.is_fast:
        raise ExportError(f"{name}: tokenizer {source!r} has no tokenizer.json (a fast one)")
    tokenizer_json, text, _ = tokenizer_rules(wrapper.tokenizer, name, ctx)
    text.clean, text.lowercase = _clean(name, kwargs, "whitespace")  # type: ignore[assignment]
    return wrapper, tokenizer_json, text


def load_open_clip(ref: str, tokenizer_dir: Path | None = None) -> SourceModel:
    """`tokenizer_dir`: a local folder with the Hugging Face tokenizer the config names."""
    import open_clip

    name, _, pretrained = ref.partition(":")
    if name not in open_clip.list_models():
        raise ExportError(f"open_clip has no model config {name!r}")
    # the tokenizer first: a missing one fails in a second, before the weights load
    text_cfg = dict((open_clip.get_model_config(name) or {}).get("text_cfg") or {})
    ctx = int(text_cfg.get("context_length", 77))
    hf_name = text_cfg.get("hf_tokenizer_name")
    if hf_name:
        tokenize, tokenizer_json, text = _hf_tokenizer(name, hf_name, text_cfg, ctx, tokenizer_dir)
    elif tokenizer_dir is not None:
        raise ExportError(f"{name} uses open_clip's own tokenizer: --tokenizer does not apply")
    else:
        tokenize, tokenizer_json, text = _bpe_tokenizer(name, text_cfg, ctx)
    model, preprocess = _create(name, pretrained or None)
    image = image_preprocess(name, model)
    bias = getattr(model, "logit_bias", None)

    def reference_pixels(images: list[Image.Image]) -> np.ndarray:
        return torch.stack([preprocess(img) for img in images]).numpy()

    def reference_tokens(texts: list[str]) -> dict[str, np.ndarray]:
        return {"input_ids": np.asarray(tokenize(texts), dtype=np.int64)}

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
        tokenizer_json=tokenizer_json,
        scores=Scores(
            logit_scale=float(model.logit_scale.exp().item()),
            logit_bias=float(bias.item()) if bias is not None else None,
        ),
        reference_pixels=reference_pixels,
        reference_tokens=reference_tokens,
        reference_image=lambda x: model.encode_image(x),
        reference_text=lambda feeds: model.encode_text(feeds["input_ids"]),
        text_call="encode_text(input_ids)",
        source={
            "kind": "open_clip",
            "model": name,
            "pretrained": pretrained or None,
            **({"hf_tokenizer": hf_name} if hf_name else {}),
        },
    )
