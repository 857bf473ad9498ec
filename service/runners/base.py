"""What every runner backend (in-process onnxruntime, remote Triton) offers the batcher."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from service.manifest import Manifest, ModelFolderError, Tower, TowerSpec

log = logging.getLogger(__name__)

NUMPY_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "uint8": np.uint8,
}


class RunnerError(RuntimeError):
    """Inference could not run (backend down, model not loaded); the API answers 503."""


class TowerRunner(Protocol):
    runtime: str
    provider: str
    spec: TowerSpec  # the graph this runner serves (a tower or its uint8 variant)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings (n, dim), float32, unit L2 norm."""
        ...


ImageInput = Literal["auto", "uint8", "float32"]
Precision = Literal["float", "int8"]


def serving_spec(
    model_dir: Path,
    manifest: Manifest,
    tower: Tower,
    pixels: ImageInput,
    precision: Precision = "float",
) -> TowerSpec:
    """The graph to serve for a tower: its int8 variant when asked for and present (else the
    float tower, logged); of that, the image tower's uint8 variant when asked (or, with "auto",
    when the model has one), else the graph itself."""
    spec = manifest.towers[tower]
    if precision == "int8":
        if spec.int8_variant is None:
            log.warning("%s: no int8 %s tower, serving %s", model_dir, tower, spec.precision)
        else:
            spec = spec.int8_variant
    if tower != "image" or pixels == "float32":
        return spec
    if spec.uint8_variant is None:
        if pixels == "uint8":
            raise ModelFolderError(
                model_dir, "image_input=uint8, but the model has no uint8 image tower (re-export)"
            )
        return spec
    return spec.uint8_variant


def select_feeds(spec: TowerSpec, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tower's declared inputs, cast to their declared dtypes (ids may be int32 or int64)."""
    feeds = {}
    for inp in spec.inputs:
        if inp.name not in arrays:
            raise RunnerError(f"no value for model input {inp.name!r}")
        feeds[inp.name] = np.ascontiguousarray(arrays[inp.name], dtype=NUMPY_DTYPES[inp.dtype])
    return feeds


def cut_padding(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Token arrays cut after the last column any row uses (by the attention mask), for a
    tower whose manifest says `trim_padding`: short texts then cost a few columns, not the
    whole context."""
    mask = feeds.get("attention_mask")
    if mask is None or mask.ndim != 2:
        return feeds
    used = np.flatnonzero(mask.any(axis=0))
    width = int(used[-1]) + 1 if used.size else 1
    if width >= mask.shape[1]:
        return feeds
    return {
        k: v[:, :width] if v.ndim == 2 and v.shape[1] == mask.shape[1] else v
        for k, v in feeds.items()
    }


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


ReadinessCheck = Callable[[], Awaitable[bool]]


def readiness_checks(runners: Iterable[object]) -> dict[str, ReadinessCheck]:
    """/readyz checks offered by runners with a remote dependency (`readiness_checks()`)."""
    checks: dict[str, ReadinessCheck] = {}
    for runner in runners:
        offer = getattr(runner, "readiness_checks", None)
        if offer is not None:
            checks.update(offer())
    return checks
