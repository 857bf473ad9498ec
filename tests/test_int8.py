"""int8 towers (`clipserve export --quantize int8`, service/export/quantize.py) on the default
model: written beside the float towers, measured against them on held-out digits, gated, and
served with `--precision int8` through the real runner and HTTP."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from service.export import ExportError, export_model
from service.export import quantize as quantize_module
from service.export.quantize import quantize_model
from service.manifest import load_manifest
from tests.mnist import held_out
from tests.server import Server, run_server
from training.mnist import NAMES, write_image_folder

pytestmark = [pytest.mark.export, pytest.mark.slow]

TEXTS = ["a photo of a seven.", "this is the digit 3", "zero", "a black and white photo of a nine"]


@pytest.fixture(scope="module")
def int8_server(int8_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("int8-server")
    args = ["--models-dir", str(int8_model.parent), "--precision", "int8"]
    with run_server(tmp, *args, "--store-engine", "none", "--max-wait-ms", "20") as srv:
        yield srv


def test_int8_towers_are_written_beside_the_float_ones_and_pass_the_gate(int8_model: Path) -> None:
    manifest = load_manifest(int8_model)  # validates every graph file of every variant
    image, text = manifest.towers["image"], manifest.towers["text"]
    assert image.int8_variant is not None and text.int8_variant is not None
    assert image.int8_variant.uint8_variant is not None  # the served image input, in int8
    for spec in (image.int8_variant, image.int8_variant.uint8_variant, text.int8_variant):
        assert spec.precision == "int8"
        ops = {n.op_type for n in onnx.load(str(spec.onnx_file(int8_model))).graph.node}
        assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops, ops
        config = spec.config_file(int8_model).read_text()
        assert f'name: "{spec.path}"' in config and "kind: KIND_CPU" in config
        assert "tensorrt" not in config  # integer CPU graphs: no GPU accelerator
    assert image.precision == text.precision == "fp32"  # the float towers are untouched
    report = manifest.parity["int8"]
    assert report["passed"] is True and report["forced"] is False
    # the ViT's patch embedding went in as a matrix product (patchify.py) and is quantized too
    assert report["patch_embeddings_as_matmul"] == 1
    for spec in (image.int8_variant, image.int8_variant.uint8_variant):
        ops = {n.op_type for n in onnx.load(str(spec.onnx_file(int8_model))).graph.node}
        assert "Conv" not in ops, ops
    assert report["eval_images"] == 1000 and report["classes"] == 10
    for key in ("image", "text", "image_uint8"):
        assert report[key]["median"] >= 0.99 and report[key]["items"] >= 26
    zero_shot = report["zero_shot_top1"]
    assert abs(zero_shot["change"]) <= 0.01 and zero_shot["before"] > 0.5
    assert set(report["text_to_image"]) == {"precision_at_1", "precision_at_5", "precision_at_10"}
    assert manifest.parity["passed"] is True  # the float parity report is still there


def _embed(server: Server, inputs: list[str], modality: str) -> np.ndarray:
    body = {"input": inputs, "modality": modality, "encoding_format": "float"}
    r = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]])


def _classify(server: Server, images: list[str]) -> list[str]:
    labels = []
    for start in range(0, len(images), 50):  # within the test server's items per request
        body = {"images": images[start : start + 50], "labels": NAMES, "top_k": 1}
        r = httpx.post(f"{server.url}/v1/classify", json=body, timeout=120)
        assert r.status_code == 200, r.text
        labels += [ranked[0]["label"] for ranked in r.json()["results"]]
    return labels


def test_served_int8_embeddings_and_accuracy_match_the_float_server(
    int8_server: Server, server: Server
) -> None:
    """Through HTTP: the int8 server says what it serves, its embeddings are the float
    server's within the gate, and it classifies held-out digits as well."""
    card = httpx.get(f"{int8_server.url}/v1/models").json()["data"][0]
    assert card["precision"] == {"image": "int8", "text": "int8"}
    assert card["image_input"] == "uint8"
    float_card = httpx.get(f"{server.url}/v1/models").json()["data"][0]
    assert float_card["precision"] == {"image": "fp32", "text": "fp32"}
    images, labels = held_out(200)
    for inputs, modality in ((TEXTS, "text"), (images[:32], "image")):
        got, want = _embed(int8_server, inputs, modality), _embed(server, inputs, modality)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        cosines = np.sum(got * want, axis=1)
        assert np.median(cosines) >= 0.99 and cosines.min() >= 0.98, cosines
    truth = [NAMES[y] for y in labels]
    accuracy = {
        name: float(np.mean([a == b for a, b in zip(_classify(srv, images), truth, strict=True)]))
        for name, srv in (("int8", int8_server), ("float", server))
    }
    assert accuracy["float"] > 0.7 and abs(accuracy["int8"] - accuracy["float"]) <= 0.03, accuracy


def test_int8_precision_on_a_model_without_int8_towers_serves_float(
    model_dir: Path, tmp_path: Path
) -> None:
    args = ["--models-dir", str(model_dir.parent), "--models", model_dir.name]
    with run_server(tmp_path, *args, "--precision", "int8", "--store-engine", "none") as srv:
        card = httpx.get(f"{srv.url}/v1/models").json()["data"][0]
        assert card["precision"] == {"image": "fp32", "text": "fp32"}
        assert _embed(srv, TEXTS[:1], "text").shape == (1, card["dimension"])
    assert "no int8 image tower" in srv.output()


def test_gate_refuses_int8_towers_unless_forced(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image_folder(tmp_path / "held-out", 200)
    folder = tmp_path / "models" / model_dir.name
    shutil.copytree(model_dir, folder)
    monkeypatch.setattr(quantize_module, "GATE_MEDIAN_COSINE", 1.01)  # unreachable
    manifest = load_manifest(folder)
    with pytest.raises(ExportError, match="refused by the gate"):
        quantize_model(folder, manifest, tmp_path / "held-out")
    assert manifest.towers["image"].int8_variant is None and "int8" not in manifest.parity
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in model_dir.iterdir())
    report = quantize_model(folder, manifest, tmp_path / "held-out", force=True)
    manifest.write(folder)
    recorded = load_manifest(folder).parity["int8"]
    assert not report.passed and recorded["forced"] is True and recorded["passed"] is False


def test_quantize_needs_held_out_images(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="needs --eval-images"):
        export_model("open_clip:ViT-B-32", tmp_path / "x", quantize="int8")
    assert not (tmp_path / "x").exists()


def test_model_card_measures_the_int8_towers(int8_model: Path, training_data: Path) -> None:
    """The default model's card (training.card) measures the int8 towers as the export's int8
    report does: on the gate's own held-out digits and prompts, the same zero-shot top-1 and
    text->image precision (both through service.evaluate's queries and metrics), within a point:
    the images go in other batches, and dynamic int8 scales are per batch."""
    from training import card as card_lib

    report = load_manifest(int8_model).parity["int8"]
    tasks = card_lib.measure_all(int8_model, ("mnist",), precision="int8")
    mnist = tasks["mnist"]
    assert mnist["top1"] == pytest.approx(report["zero_shot_top1"]["after"], abs=0.01)
    for k in (1, 5, 10):
        key = f"precision_at_{k}"
        assert mnist["text_to_image"][key] == pytest.approx(
            report["text_to_image"][key]["after"], abs=0.01
        )
    section = card_lib._int8_section({"int8": card_lib.int8_summary(report, tasks)})
    assert "--precision int8" in section and f"{report['zero_shot_top1']['after']:.4f}" in section
