"""The shipped default model (models/mini-clip): what `clipserve serve` serves with no settings,
a complete folder under 30 MB with OpenAI CLIP's tokenizer, and a card whose numbers are real:
every task is re-measured here on the held-out sets (onnxruntime, the service's preprocessing and
tokenizer, no torch) and must match the card, beat mnist-clip where both are measured and beat
chance by a wide margin elsewhere."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.config import BUNDLED_MODELS_DIR, Settings
from service.imaging import ImageLimits
from service.manifest import Manifest, load_manifest
from service.registry import load_registry
from service.runners.factory import runner_factory
from tests.conftest import MODELS_DIR
from tests.server import REPO, run_server
from training import card as card_lib
from training import emoji, fonts, mnist, photos, shapes
from training.train_default import NAME, TEMPLATES, TRAIN_TEMPLATES

MODEL = MODELS_DIR / NAME


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest(MODEL)


@pytest.fixture(scope="module")
def card(manifest: Manifest) -> dict[str, Any]:
    return manifest.card


@pytest.fixture(scope="module")
def measured(training_data: Path) -> dict[str, Any]:
    return card_lib.measure_all(MODEL)


def test_clipserve_serve_with_no_settings_defaults_to_it() -> None:
    """The README's first command: every bundled model is loaded, the default is mini-clip."""
    settings = Settings(_env_file=None)
    assert settings.models_dir == BUNDLED_MODELS_DIR and settings.default_model is None
    registry = load_registry(
        settings.models_dir, settings.models, None, runner_factory(settings), ImageLimits()
    )
    assert registry.default == NAME and "mnist-clip" in registry.models


def test_folder_is_complete_small_and_speaks_clip(manifest: Manifest) -> None:
    """fp32 towers and their int8 variants, no uint8-input image variant (at 32 px it saves
    nothing and would take the folder past 30 MB: training.train_default.export)."""
    assert manifest.family == "clip" and set(manifest.towers) == {"image", "text"}
    assert manifest.towers["image"].uint8_variant is None
    for tower in ("image", "text", "image_int8", "text_int8"):
        assert (MODEL / tower / "config.pbtxt").is_file()
        assert (MODEL / tower / "1" / "model.onnx").is_file()
    size = sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file())
    assert size < 30 * 1024 * 1024, f"the shipped model is {size} bytes"
    text = manifest.text
    assert text is not None
    assert (text.kind, text.context_length, text.eot_id, text.clean) == ("bpe", 77, 49407, "clip")
    assert manifest.templates == TEMPLATES and set(TEMPLATES) == set(TRAIN_TEMPLATES)


@pytest.mark.export
def test_tokenizer_is_the_one_our_exporter_writes_for_openai_clip() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    from service.export.clip_bpe import clip_bpe_tokenizer

    shipped = (MODEL / "tokenizer.json").read_text()
    assert shipped == clip_bpe_tokenizer(SimpleTokenizer()).to_str()


@pytest.mark.export
def test_fp16_towers_give_the_same_embeddings(tmp_path: Path, training_data: Path) -> None:
    """`--fp16` (what `clipserve export --fp16` does to the towers) on this model."""
    from service.export.onnx_towers import convert_fp16

    half_dir = tmp_path / NAME
    shutil.copytree(MODEL, half_dir)
    manifest = load_manifest(half_dir)
    for tower in ("image", "text"):
        convert_fp16(half_dir / tower / "1" / "model.onnx")
        manifest.towers[tower].precision = "fp16"  # as the exporter records it
    manifest.write(half_dir)
    full, half = card_lib.Towers(MODEL), card_lib.Towers(half_dir)
    t = card_lib.task("emoji_other_style")
    assert (full.images(t.images[:64]) * half.images(t.images[:64])).sum(1).min() >= 0.999
    assert (full.texts(t.classes[:64]) * half.texts(t.classes[:64])).sum(1).min() >= 0.999


def test_parity_with_open_clip_was_measured_and_passed(manifest: Manifest) -> None:
    parity = manifest.parity
    assert parity["passed"] is True and parity["forced"] is False
    assert parity["precision"] == "fp32" and parity["threshold"] >= 0.9999
    for tower in ("image", "text"):
        assert parity[tower]["min_cosine"] >= 0.9999, tower
    assert parity["token_ids_equal"] is True
    assert manifest.source["kind"] == "open_clip" and manifest.source["model"] == NAME


def test_towers_are_fused_and_have_int8_variants(manifest: Manifest) -> None:
    """As `clipserve export --quantize int8` writes them: each of the text tower's three
    self-attentions is one fused Attention node (its ResNet image tower has none we fuse), and
    the int8 towers quantize the matrix products and the token embedding, for CPU instances."""
    import onnx

    fusions = manifest.export["fusions"]
    assert fusions["text"]["kept"] and fusions["text"]["attention_fused"] == 3
    assert fusions["text"]["ops"]["Attention"] == 3 and fusions["image"]["kept"]
    for name in ("image", "text"):
        spec = manifest.towers[name].int8_variant
        assert spec is not None and spec.precision == "int8"
        graph = onnx.load(str(spec.onnx_file(MODEL))).graph
        ops = {n.op_type for n in graph.node}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops, ops
        assert "kind: KIND_CPU" in spec.config_file(MODEL).read_text()
    text_int8 = manifest.towers["text"].int8_variant
    assert text_int8 is not None
    size = text_int8.onnx_file(MODEL).stat().st_size
    assert size < manifest.towers["text"].onnx_file(MODEL).stat().st_size / 3  # int8 embedding
    report = manifest.parity["int8"]
    assert report["passed"] is True and report["forced"] is False
    assert report["text"]["median"] >= 0.99 and report["image"]["median"] >= 0.99
    assert abs(report["zero_shot_top1"]["change"]) <= 0.01


@pytest.mark.slow
def test_int8_figures_remeasured_match_the_card(card: dict[str, Any], training_data: Path) -> None:
    """Every task through the int8 towers (what `--precision int8` serves) gives the card's int8
    column, within a point of the float figures where the card has many images per class."""
    int8 = card["int8"]
    assert int8["median_cosine"]["text"] >= 0.99 and int8["median_cosine"]["image"] >= 0.99
    measured = card_lib.measure_all(MODEL, precision="int8")
    assert set(measured) == set(int8["tasks"]) == set(card["tasks"])
    for name, m in measured.items():
        published = int8["tasks"][name]
        assert abs(m["top1"] - published["top1"]) <= 0.01, (name, m["top1"], published["top1"])
        got, want = (
            m["text_to_image"]["precision_at_1"],
            published["text_to_image"]["precision_at_1"],
        )
        assert abs(got - want) <= 0.01, (name, got, want)
    for name in ("mnist", "font_digits", "digits_8x8"):
        assert abs(measured[name]["top1"] - card["tasks"][name]["top1"]) <= 0.01, name
    assert "int8 top-1 / P@1" in (MODEL / "MODEL_CARD.md").read_text()


def test_int8_towers_served_with_precision_int8(tmp_path: Path) -> None:
    """`clipserve serve --precision int8` serves both int8 towers of the default model (the
    service's own preprocessing and batching: the same vectors as the card's int8 towers)."""
    import httpx
    import numpy as np

    args = ["--models-dir", str(MODELS_DIR), "--models", NAME, "--precision", "int8"]
    with run_server(tmp_path, *args, "--store-engine", "none") as server:
        card = httpx.get(f"{server.url}/v1/models/{NAME}").json()
        assert card["precision"] == {"image": "int8", "text": "int8"}, card
        texts = ["a red heart", "two blue stars", "the digit seven"]
        body = {"model": NAME, "input": texts, "encoding_format": "float"}
        r = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60)
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]])
    want = card_lib.Towers(MODEL, precision="int8").texts(texts)
    assert (got * want).sum(1).min() >= 0.999  # dynamic scales: per batch


def test_card_states_data_licences_and_method(card: dict[str, Any]) -> None:
    text = (MODEL / "MODEL_CARD.md").read_text()
    licences = {d["name"]: d["licence"] for d in card["data"]}
    assert "Apache-2.0" in licences["Noto Emoji"] and "CC-BY-4.0" in licences["Twemoji"]
    assert not any("openmoji" in (d["name"] + d["what"]).lower() for d in card["data"])
    training = card["training"]
    assert training["command"].startswith("python -m training.train_default")
    assert 0 < training["cpu_minutes"] < 20  # wall time depends on what else shares the cores
    assert "real photos" in card["cannot"] and "real photos" in text
    for name, m in card["tasks"].items():
        assert str(m["top1"]) in text, name


def test_held_out_data_never_enters_training() -> None:
    assert not set(fonts.fonts(held_out=True)) & set(fonts.fonts(held_out=False))
    assert {p.stem.split("-")[0] for p in fonts.fonts(held_out=True)} >= {"LiberationSans"}
    held = [c for c in emoji.concepts() if c.held_out]
    assert 100 <= len(held) < len(emoji.concepts()) / 5
    rng = random.Random(0)
    for _ in range(3000):
        _, caption, _ = shapes.training_sample(rng)
        assert not any(name in caption for name in shapes.HELD_OUT), caption
    assert not set(photos.HELD_OUT) & set(photos.training_names())
    held_mnist, train_mnist = mnist.split(0)
    assert not set(held_mnist) & set(train_mnist)


@pytest.mark.slow
def test_every_task_remeasured_matches_the_card(
    card: dict[str, Any], measured: dict[str, Any]
) -> None:
    assert set(measured) == set(card["tasks"])
    for name, m in measured.items():
        published = card["tasks"][name]
        assert m["images"] == published["images"] and m["classes"] == published["classes"]
        for key in ("top1", "top5"):
            assert abs(m[key] - published[key]) <= 0.01, (name, key, m[key], published[key])
        for key in ("precision_at_1", "precision_at_10"):
            got, want = m["text_to_image"][key], published["text_to_image"][key]
            assert abs(got - want) <= 0.01, (name, key, got, want)


@pytest.mark.slow
def test_beats_mnist_clip_on_every_digit_task(measured: dict[str, Any]) -> None:
    baseline = card_lib.measure_all(MODELS_DIR / "mnist-clip", card_lib.DIGIT_TASKS)
    for name, old in baseline.items():
        new = measured[name]
        assert new["top1"] > old["top1"], (name, new["top1"], old["top1"])
        for key in ("precision_at_1", "precision_at_10"):
            assert new["text_to_image"][key] >= old["text_to_image"][key], (name, key)


@pytest.mark.slow
def test_beats_chance_widely_on_the_new_tasks(measured: dict[str, Any]) -> None:
    emoji_task = measured["emoji_other_style"]
    assert emoji_task["classes"] >= 100
    assert emoji_task["top1"] >= 20 * emoji_task["chance_top1"]
    assert emoji_task["text_to_image"]["precision_at_1"] >= 20 * emoji_task["chance_top1"]
    for name in ("shape_colour", "shape_count"):
        m = measured[name]
        assert m["top1"] >= 3 * m["chance_top1"], name
        assert m["text_to_image"]["precision_at_1"] >= 3 * m["chance_top1"], name
    assert measured["real_photos"]["top1"] <= 0.5  # what the card says it cannot do


@pytest.mark.slow
def test_clipserve_eval_gives_the_cards_zero_shot_figures(
    tmp_path: Path, card: dict[str, Any], training_data: Path
) -> None:
    """The card's sets written as ImageFolder trees and measured by `clipserve eval` through a
    running server (uint8 image tower, HTTP, /v1/classify) give the card's top-1."""
    names = ("font_digits", "emoji_other_style")
    card_lib.write_image_folders(tmp_path / "sets", names)
    with run_server(tmp_path, "--models-dir", str(MODELS_DIR), "--models", NAME) as server:
        for name in names:
            folder = str(tmp_path / "sets" / name)
            done = subprocess.run(
                [sys.executable, "-m", "service", "eval", folder, "--url", server.url],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=REPO,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            found = re.search(r"zero-shot top-1 ([0-9.]+)", done.stdout)
            assert found, done.stdout
            top1 = float(found.group(1))
            assert abs(top1 - card["tasks"][name]["top1"]) <= 0.01, (name, top1, done.stdout)
