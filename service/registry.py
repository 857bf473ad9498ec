"""The loaded models: manifest, preprocessors and one runner per tower, from the model repository.

Everything that can be wrong with a model folder is found here, at start-up, with the file named.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.imaging import ImageLimits, ImagePreprocessor
from service.manifest import MANIFEST_FILE, Manifest, ModelFolderError, Tower, load_manifest
from service.runners.base import TowerRunner
from service.texts import TextTokenizer

log = logging.getLogger(__name__)

RunnerFactory = Callable[[Path, Manifest, Tower], TowerRunner]


class UnknownModel(LookupError):
    pass


@dataclass
class LoadedModel:
    name: str
    path: Path
    manifest: Manifest
    runners: dict[Tower, TowerRunner]
    tokenizer: TextTokenizer | None = None
    images: ImagePreprocessor | None = None

    @property
    def dim(self) -> int:
        return self.manifest.embedding_dim

    def warm_up(self) -> None:
        """One real batch per tower so the first request does not pay for lazy initialisation."""
        if self.tokenizer is not None and "text" in self.runners:
            ids, mask = self.tokenizer.encode(["a warm-up sentence", "another one"])
            self._check(self.runners["text"].run({"input_ids": ids, "attention_mask": mask}))
        if self.images is not None and "image" in self.runners:
            runner = self.runners["image"]
            (spec,) = runner.spec.inputs
            pixels = np.zeros([2, *spec.shape[1:]], dtype=spec.dtype)
            self._check(runner.run({spec.name: pixels}))

    def _check(self, out: np.ndarray) -> None:
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise ModelFolderError(
                self.path / MANIFEST_FILE,
                f"towers return shape {out.shape}, manifest says dimension {self.dim}",
            )


@dataclass
class Registry:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    default: str | None = None

    def get(self, name: str | None) -> LoadedModel:
        if name is None:
            if self.default is None:
                raise UnknownModel("no model loaded")
            name = self.default
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise UnknownModel(f"unknown model {name!r}; loaded: {known}") from None


def discover(models_dir: Path, names: list[str]) -> list[Path]:
    """Model folders to load: the named ones, or every folder holding a manifest."""
    if not models_dir.is_dir():
        raise ModelFolderError(models_dir, "models directory does not exist")
    if names:
        return [models_dir / n for n in names]
    found = sorted(p.parent for p in models_dir.glob(f"*/{MANIFEST_FILE}"))
    if not found:
        raise ModelFolderError(models_dir, f"no model folders (no */{MANIFEST_FILE})")
    return found


def load_model(
    path: Path, make_runner: RunnerFactory, limits: ImageLimits, exif_transpose: bool = True
) -> LoadedModel:
    manifest = load_manifest(path)
    runners = {tower: make_runner(path, manifest, tower) for tower in manifest.towers}
    tokenizer = None
    if manifest.text is not None and "text" in manifest.towers:
        try:
            tokenizer = TextTokenizer(manifest.text, path)
        except Exception as exc:
            raise ModelFolderError(path / manifest.text.tokenizer, f"bad tokenizer: {exc}") from exc
    images = None
    if manifest.image is not None and "image" in runners:
        raw = runners["image"].spec.inputs[0].dtype == "uint8"  # the tower normalises
        images = ImagePreprocessor(manifest.image, limits, raw, exif_transpose)
    return LoadedModel(path.name, path, manifest, runners, tokenizer, images)


def load_registry(
    models_dir: Path,
    names: list[str],
    default: str | None,
    make_runner: RunnerFactory,
    limits: ImageLimits,
    warm_up: bool = True,
    exif_transpose: bool = True,
) -> Registry:
    registry = Registry()
    for path in discover(models_dir, names):
        model = load_model(path, make_runner, limits, exif_transpose)
        if warm_up:
            model.warm_up()
        registry.models[model.name] = model
        log.info(
            "loaded model %s (dim %d, towers %s)", model.name, model.dim, ",".join(model.runners)
        )
    if default is not None and default not in registry.models:
        raise ModelFolderError(models_dir / default, "default model is not among the loaded ones")
    registry.default = default or next(iter(registry.models))
    return registry
