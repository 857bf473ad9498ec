"""What every checkpoint loader hands the export pipeline: towers plus the source's own rules.

The `reference_*` callables are the source framework's own preprocessing; the parity report
compares our preprocessing and ONNX towers against them and the torch towers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from service.manifest import ImagePreprocess, Scores, TextPreprocess


@dataclass
class SourceModel:
    name: str
    family: str  # clip | siglip
    embedding_dim: int
    image_tower: torch.nn.Module  # pixel_values (B,3,S,S) float32 -> (B,D), not normalised
    text_tower: torch.nn.Module  # input_ids (B,L) int64 -> (B,D), not normalised
    image: ImagePreprocess
    text: TextPreprocess
    tokenizer_json: str
    scores: Scores
    reference_pixels: Callable[[list[Image.Image]], np.ndarray]
    reference_tokens: Callable[[list[str]], np.ndarray]
    # the source framework's own embedding API (not our tower wrappers), for parity
    reference_image: Callable[[torch.Tensor], torch.Tensor]
    reference_text: Callable[[torch.Tensor], torch.Tensor]
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
