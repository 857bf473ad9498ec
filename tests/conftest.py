from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import REPO, Server, run_server

# The suite runs on the shipped default model; point these elsewhere to run it on another one.
MODELS_DIR = Path(os.environ.get("CLIPSERVE_TEST_MODELS_DIR", REPO / "models"))
DEFAULT_MODEL = os.environ.get("CLIPSERVE_TEST_MODEL", "mnist-clip")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = MODELS_DIR / DEFAULT_MODEL
    assert (path / "clipserve.json").is_file(), f"the shipped default model is missing: {path}"
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Server]:
    """The service on the shipped default model, as `clipserve serve` runs it."""
    tmp = tmp_path_factory.mktemp("server")
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL]
    limits = ["--max-image-bytes", "2000000", "--max-body-bytes", "6000000", "--max-items", "64"]
    batching = ["--max-wait-ms", "20", "--max-batch-size", "32"]
    with run_server(tmp, *args, *limits, *batching, "--max-text-chars", "2000") as srv:
        yield srv


@pytest.fixture(scope="session")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the default model with int8 towers, quantized and gated on its held-out MNIST
    digits (`service.export.quantize`), alone in a model repository."""
    import shutil

    from service.export.quantize import quantize_model
    from service.manifest import load_manifest
    from training.mnist import write_image_folder

    root = tmp_path_factory.mktemp("int8")
    write_image_folder(root / "held-out")
    folder = root / "models" / DEFAULT_MODEL
    shutil.copytree(MODELS_DIR / DEFAULT_MODEL, folder)
    manifest = load_manifest(folder)
    quantize_model(folder, manifest, root / "held-out")
    manifest.write(folder)
    return folder


@pytest.fixture(scope="session")
def training_data() -> Path:
    """The default model's data (npm emoji sets, Debian fonts) in the cache: fetched once by
    `python -m training.fetch_data` (make test runs it), a no-op when already there."""
    from training.fetch_data import fetch

    return fetch()
