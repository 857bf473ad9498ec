"""What every checkpoint loader hands the export pipeline: towers plus the source's own rules.

The `reference_*` callables are the source framework's own preprocessing and embedding calls;
the parity report compares our preprocessing and ONNX towers against them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from service.manifest import ImagePreprocess, Scores, TextPreprocess


@dataclass(frozen=True)
class KnownDeviation:
    """Where our tokenizer deliberately or unavoidably differs from the source's, with texts
    that show it; the parity report measures them and lists them by name."""

    name: str
    reason: str
    texts: tuple[str, ...]


@dataclass
class SourceModel:
    name: str
    family: str  # clip | siglip
    embedding_dim: int
    image_tower: torch.nn.Module  # pixel_values (B,3,S,S) float32 -> (B,D), not normalised
    # input_ids (B,L) int64 [, attention_mask (B,L) int64 when text.attention_mask] -> (B,D)
    text_tower: torch.nn.Module
    image: ImagePreprocess
    text: TextPreprocess
    tokenizer_json: str
    scores: Scores
    # the source processor on images exactly as opened from their files (no convert("RGB"))
    reference_pixels: Callable[[list[Image.Image]], np.ndarray]
    # the source tokenizer as its framework calls it: input_ids [and attention_mask], int64
    reference_tokens: Callable[[list[str]], dict[str, np.ndarray]]
    # the source framework's own embedding API (not our tower wrappers), for parity
    reference_image: Callable[[torch.Tensor], torch.Tensor]
    # the text call that reproduces the family as trained (`text_call` says which)
    reference_text: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    text_call: str = "input_ids"
    text_deviations: tuple[KnownDeviation, ...] = ()
    source: dict[str, Any] = field(default_factory=dict)


def parse_source(source: str) -> tuple[str, str]:
    """`hf:<id or dir>` or `open_clip:<model>[:<tag or path>]` -> (kind, rest)."""
    kind, sep, rest = source.partition(":")
    if not sep or not rest or kind not in ("hf", "open_clip"):
        from service.export.errors import ExportError

        raise ExportError(
            f"unknown source {source!r}: use hf:<hub id or folder> or "
            "open_clip:<model>[:<pretrained tag or checkpoint path>]"
        )
    return kind, rest
