"""Export of a tiny random-weight Hugging Face CLIP: parity against transformers' own outputs,
the result served through the HTTP API, and a parity check that does fail when it should."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from service.export import ExportError, export_model
from service.export.hf import load_hf
from service.export.parity import measure
from service.manifest import load_manifest
from tests.images import data_uri, encode, noise
from tests.server import run_server
from training.tiny_hf import clip_config, save_hf_folder, word_tokenizer

pytestmark = pytest.mark.export

WORDS = ["a", "photo", "of", "the", "cat", "dog", "number", "seven", "one", "two", "red", "car"]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import CLIPModel

    folder = tmp_path_factory.mktemp("hf") / "tiny-clip"
    tok = word_tokenizer(WORDS)
    torch.manual_seed(0)
    model = CLIPModel(clip_config(tok.get_vocab_size(), 16, 48, 8, 64, 2, 32)).eval()
    save_hf_folder(model, tok, folder, 48, 16)
    return folder


@pytest.fixture(scope="module")
def exported(hf_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo") / "tiny-clip"
    export_model(f"hf:{hf_folder}", out)
    return out


def test_export_writes_a_servable_model_repository(exported: Path) -> None:
    manifest = load_manifest(exported)
    assert manifest.family == "clip" and manifest.embedding_dim == 32
    assert manifest.name == "tiny-clip"
    assert manifest.image is not None and manifest.image.size == 48
    assert manifest.text is not None and manifest.text.context_length == 16
    for tower in ("image", "text"):
        config = (exported / tower / "config.pbtxt").read_text()
        assert f'name: "{tower}"' in config and "dynamic_batching" in config
    assert manifest.scores.logit_scale == pytest.approx(np.exp(np.log(1 / 0.07)), rel=1e-4)


def test_exported_folder_is_readable_like_any_other(exported: Path) -> None:
    """The model folder gets the permissions of a folder made there (umask), not those of a
    private temporary folder: a container running as another user (the image's service user,
    Triton) must read it when it is mounted."""
    plain = exported.parent / "plain"
    plain.mkdir()
    assert exported.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_parity_against_transformers(exported: Path) -> None:
    parity = load_manifest(exported).parity
    assert parity["passed"] is True and parity["forced"] is False
    assert parity["image"]["min_cosine"] >= 0.9999 and parity["image"]["items"] >= 10
    assert parity["text"]["min_cosine"] >= 0.9999 and parity["text"]["items"] >= 10
    assert parity["token_ids_equal"] is True
    assert parity["pixel_mean_abs_diff"] <= 0.01


def test_served_embeddings_equal_the_source_model(
    exported: Path, hf_folder: Path, tmp_path: Path
) -> None:
    """Through the HTTP API, against transformers' own processor, tokenizer and model."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(hf_folder).eval()
    processor = AutoImageProcessor.from_pretrained(hf_folder)
    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    texts = ["a photo of the cat", "seven", "two red car"]
    img = noise(80, 60, seed=3)
    with torch.no_grad():
        ids = tokenizer(texts, padding="max_length", max_length=16, return_tensors="pt")
        ref_txt = model.get_text_features(input_ids=ids["input_ids"]).pooler_output.numpy()
        px = processor(images=[img], return_tensors="pt")["pixel_values"]
        ref_img = model.get_image_features(pixel_values=px).pooler_output.numpy()
    ref_txt /= np.linalg.norm(ref_txt, axis=1, keepdims=True)
    ref_img /= np.linalg.norm(ref_img, axis=1, keepdims=True)
    with run_server(tmp_path, "--models-dir", str(exported.parent)) as srv:
        txt = httpx.post(f"{srv.url}/v1/embeddings", json={"input": texts}).json()
        got_txt = np.array([d["embedding"] for d in txt["data"]])
        body = {"input": [data_uri(encode(img, "PNG"))], "modality": "image"}
        got_img = np.array(
            httpx.post(f"{srv.url}/v1/embeddings", json=body).json()["data"][0]["embedding"]
        )
    assert np.min(np.sum(got_txt * ref_txt, axis=1)) >= 0.9999
    assert float(got_img @ ref_img[0]) >= 0.9999


def _contrib_nodes(path: Path) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(str(path)).graph.node if n.domain == "com.microsoft"]


def test_exported_towers_run_fused_attention(exported: Path) -> None:
    """Each attention is one onnxruntime Attention node (causal in the text tower), the
    manifest says what was fused, and the served graphs above (HTTP, against transformers)
    are these fused graphs."""
    manifest = load_manifest(exported)
    image = manifest.towers["image"]
    assert image.uint8_variant is not None
    for spec, causal in ((image, 0), (image.uint8_variant, 0), (manifest.towers["text"], 1)):
        attention = [
            n for n in _contrib_nodes(spec.onnx_file(exported)) if n.op_type == "Attention"
        ]
        assert len(attention) == 2  # one per layer
        for node in attention:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["unidirectional"] == causal and attrs["num_heads"] == 2
    for tower in ("image", "text"):
        fused = manifest.export["fusions"][tower]
        assert fused["kept"] is True and fused["rejected"] == ""
        assert fused["attention_modules"] == fused["attention_fused"] == 2
        ops = fused["ops"]
        assert ops["Attention"] == 2 and ops["QuickGelu"] == 2  # CLIP's GELU
        # layer norms fused; residual + layer norm left as Add + LayerNormalization (onnxruntime's
        # CPU SkipLayerNormalization kernel is the slower of the two)
        assert ops["LayerNormalization"] >= 3 and "SkipLayerNormalization" not in ops


def test_text_tower_runs_without_the_padding(exported: Path) -> None:
    """CLIP's text tower is causal and pools at the end-of-text token: the export proves that
    cutting a batch after its longest text changes nothing, and the runner then does so."""
    from service.runners.base import cut_padding
    from service.runners.onnx import OrtOptions, OrtTowerRunner
    from service.texts import TextTokenizer

    manifest = load_manifest(exported)
    spec = manifest.towers["text"]
    assert spec.trim_padding is True and manifest.export["fusions"]["text"]["trims_padding"]
    assert manifest.towers["image"].trim_padding is False
    assert manifest.text is not None
    ids, mask = TextTokenizer(manifest.text, exported).encode(["a photo of the cat", "seven"])
    feeds = {"input_ids": ids, "attention_mask": mask}
    cut = cut_padding(feeds)
    assert cut["input_ids"].shape == (2, 7) and ids.shape == (2, 16)  # 5 words + start/end
    trimmed = OrtTowerRunner(spec.onnx_file(exported), spec, OrtOptions())
    padded = spec.model_copy(update={"trim_padding": False})
    full = OrtTowerRunner(spec.onnx_file(exported), padded, OrtOptions())
    np.testing.assert_allclose(trimmed.run(feeds), full.run(feeds), atol=1e-5)


def _served_images(srv_url: str, blobs: list[bytes]) -> tuple[np.ndarray, str]:
    body = {"input": [data_uri(b) for b in blobs], "modality": "image"}
    got = httpx.post(f"{srv_url}/v1/embeddings", json=body).json()
    card = httpx.get(f"{srv_url}/v1/models/tiny-clip").json()
    return np.array([d["embedding"] for d in got["data"]]), card["image_input"]


def test_uint8_variant_gives_the_float_towers_embeddings(exported: Path, tmp_path: Path) -> None:
    """The fast path (uint8 pixels, normalised in the graph) against the reference path (float
    pixels normalised on the host), through HTTP on photos of several sizes and formats."""
    manifest = load_manifest(exported)
    variant = manifest.towers["image"].uint8_variant
    assert variant is not None and variant.inputs[0].dtype == "uint8"
    assert variant.inputs[0].shape == [-1, 48, 48, 3]
    assert 'name: "image_uint8"' in (exported / "image_uint8" / "config.pbtxt").read_text()
    assert manifest.parity["image_uint8"]["min_cosine"] >= 0.9999  # against transformers
    blobs = [encode(noise(80, 60, seed=s), fmt) for s, fmt in enumerate(["PNG", "JPEG", "WEBP"])]
    blobs.append(encode(noise(1200, 700, seed=7), "JPEG"))  # large enough for draft decoding
    results = {}
    for choice in ("uint8", "float32"):
        with run_server(
            tmp_path, "--models-dir", str(exported.parent), "--image-input", choice
        ) as srv:
            results[choice] = _served_images(srv.url, blobs)
    (fast, fast_kind), (ref, ref_kind) = results["uint8"], results["float32"]
    assert (fast_kind, ref_kind) == ("uint8", "float32")
    assert np.min(np.sum(fast * ref, axis=1)) >= 0.9999


def test_uint8_input_needs_the_variant(exported: Path, tmp_path: Path) -> None:
    """Without the variant, "auto" serves the float tower and "uint8" refuses to start."""
    plain = tmp_path / "models" / "tiny-clip"
    plain.mkdir(parents=True)
    for item in exported.iterdir():
        if item.name not in ("clipserve.json", "image_uint8"):
            (plain / item.name).symlink_to(item)
    manifest = json.loads((exported / "clipserve.json").read_text())
    manifest["towers"]["image"]["uint8_variant"] = None
    (plain / "clipserve.json").write_text(json.dumps(manifest))
    with run_server(tmp_path, "--models-dir", str(plain.parent)) as srv:
        _, kind = _served_images(srv.url, [encode(noise(40, 40, seed=1), "PNG")])
        assert kind == "float32"
    import subprocess
    import sys

    from tests.server import REPO

    flags = ["--image-input", "uint8", "--port", "0"]
    refused = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--models-dir", str(plain.parent), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert refused.returncode != 0
    assert "no uint8 image tower" in refused.stderr


def test_fp16_export_keeps_float32_io_and_passes_its_threshold(
    hf_folder: Path, exported: Path, tmp_path: Path
) -> None:
    manifest = export_model(f"hf:{hf_folder}", tmp_path / "tiny-fp16", fp16=True)
    assert manifest.towers["image"].precision == "fp16"
    assert manifest.towers["image"].inputs[0].dtype == "float32"
    assert manifest.parity["passed"] and manifest.parity["threshold"] == 0.999
    assert manifest.parity["image"]["min_cosine"] >= 0.999
    size16 = (tmp_path / "tiny-fp16" / "image" / "1" / "model.onnx").stat().st_size
    size32 = (exported / "image" / "1" / "model.onnx").stat().st_size
    assert size16 < 0.7 * size32  # the weights really are half precision


def test_wrong_preprocessing_fails_parity(exported: Path, hf_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in exported.iterdir():
        target = broken / item.name
        target.symlink_to(item)
    (broken / "clipserve.json").unlink()
    manifest = json.loads((exported / "clipserve.json").read_text())
    manifest["image"]["mean"] = [0.48145466, 0.4578275, 0.40821073]  # CLIP's, not this model's
    (broken / "clipserve.json").write_text(json.dumps(manifest))
    report = measure(load_hf(str(hf_folder)), load_manifest(broken), broken)
    assert not report.passed
    assert report.pixel_mean_abs_diff > 0.01 and report.image.min_cosine < 0.9999


def test_failed_parity_refuses_to_write_unless_forced(hf_folder: Path, tmp_path: Path) -> None:
    import service.export.parity as parity

    original = parity.THRESHOLDS["fp32"]
    parity.THRESHOLDS["fp32"] = 1.01  # unreachable: every export now "fails"
    try:
        with pytest.raises(ExportError, match="parity check failed"):
            export_model(f"hf:{hf_folder}", tmp_path / "no")
        assert not (tmp_path / "no").exists()
        export_model(f"hf:{hf_folder}", tmp_path / "forced", force=True)
    finally:
        parity.THRESHOLDS["fp32"] = original
    recorded = load_manifest(tmp_path / "forced").parity
    assert recorded["passed"] is False and recorded["forced"] is True


def test_offline_hub_id_gives_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExportError, match="cannot load Hugging Face model"):
        export_model("hf:openai/clip-vit-base-patch32", tmp_path / "x")
    with pytest.raises(ExportError, match="unknown source"):
        export_model("nowhere:thing", tmp_path / "y")
    with pytest.raises(ExportError, match="no such model folder"):
        export_model(f"hf:{tmp_path / 'not-here'}", tmp_path / "z")
    with pytest.raises(ExportError, match="cannot load Hugging Face model folder"):
        export_model(f"hf:{tmp_path}", tmp_path / "w")  # a folder, but no checkpoint in it


def test_cli_export_with_triton_options(hf_folder: Path, exported: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.server import REPO
    from training.mnist import write_image_folder

    out = tmp_path / "models" / "cli-clip"
    write_image_folder(tmp_path / "held-out", 50)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "export",
            "--source",
            f"hf:{hf_folder}",
            "--out",
            str(out),
            "--triton-tensorrt",
            "--triton-instances",
            "2",
            "--triton-max-batch-size",
            "64",
            "--no-simplify",
            "--no-fuse",
            "--quantize",
            "int8",
            "--eval-images",
            str(tmp_path / "held-out"),
            "--force",  # random weights: zero-shot is chance either way
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PASS" in result.stdout
    assert load_manifest(out).export["simplified"] is False
    assert "fusions" not in load_manifest(out).export  # --no-fuse: the plain graphs
    int8 = load_manifest(out).towers["text"].int8_variant
    assert int8 is not None and int8.onnx_file(out).is_file() and "int8 towers" in result.stdout
    assert load_manifest(out).parity["int8"]["eval_images"] == 50
    for tower, x in (
        ("image", np.random.default_rng(0).standard_normal((3, 3, 48, 48), dtype=np.float32)),
        ("text", np.array([[2, 4, 5, 6, 3] + [0] * 11, [2, 7, 3] + [0] * 13])),
    ):
        plain, fused = (m / tower / "1" / "model.onnx" for m in (out, exported))
        assert not _contrib_nodes(plain) and _contrib_nodes(fused)
        name = load_manifest(out).towers[tower].inputs[0].name  # type: ignore[index]
        a, b = (
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
            for p in (plain, fused)
        )
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3)
    config = (out / "image" / "config.pbtxt").read_text()
    assert "max_batch_size: 64" in config and "count: 2" in config
    assert 'name : "tensorrt"' in config and 'value: "FP16"' in config
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "export",
            "--source",
            "open_clip:no-such-model",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "no model config" in bad.stderr and "Traceback" not in bad.stderr


def test_tensorrt_provider_options(exported: Path) -> None:
    """What our runner asks of the TensorRT provider (no TensorRT libraries here to run it)."""
    from service.runners.onnx import OrtOptions, _trt_options

    spec = load_manifest(exported).towers["image"]
    opts = _trt_options(spec, exported / ".trt" / "image", OrtOptions(max_batch_size=128))
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(exported / ".trt" / "image")
    assert opts["trt_fp16_enable"] == "True"
    assert opts["trt_profile_min_shapes"] == "pixel_values:1x3x48x48"
    assert opts["trt_profile_max_shapes"] == "pixel_values:128x3x48x48"
