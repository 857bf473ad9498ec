"""Export tiny random-weight checkpoints of each family laid out as they really ship, serve them
all from one model repository through the HTTP API, and compare with the source frameworks
called the way users call them: raw image files to the source processor, texts with
punctuation, entities and scripts, the family's own tokenizer and text call."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from service.export import export_model
from service.export.hf import load_hf
from service.export.parity import measure
from service.manifest import load_manifest
from tests.images import data_uri, encode, noise
from tests.server import REPO, Server, run_server
from training.tiny_families import (
    ABSENT_HUB_TOKENIZER,
    add_open_clip_configs,
    sentencepiece_model,
    siglip_folder,
    t5_tokenizer_folder,
)

pytestmark = [pytest.mark.export, pytest.mark.slow]

TEXTS = [
    "a photo of a cat",
    "Fish &amp; chips, twice!",
    "\uff26\uff35\uff2c\uff2c width and \ufb01ne ligatures",  # full width, ligature
    "caf\u00e9 \u2014 na\u00efve: \U0001f431 on a mat",
    "snake_case_words (in brackets) #1 " * 3,  # past a 16-token context
]
OPEN_CLIP_MODELS = ["tiny-openclip-vit", "tiny-mobileclip-s1-fp16", "tiny-openclip-siglip"]
HF_MODELS = ["tiny-siglip", "tiny-siglip2", "tiny-siglip-mask"]
FP16 = {"tiny-openclip-vit-fp16", "tiny-mobileclip-s1-fp16"}


def _image_files() -> dict[str, bytes]:
    rgb = np.asarray(noise(90, 70, seed=5))
    alpha = np.tile(np.linspace(-255, 510, 90).clip(0, 255).astype(np.uint8), (70, 1))
    return {
        "photo.png": encode(Image.fromarray(rgb), "PNG"),
        "rgba.png": encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"),
        "palette.png": encode(Image.fromarray(rgb).quantize(48), "PNG"),
    }


IMAGES = _image_files()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("families")
    add_open_clip_configs(root / "open_clip_configs")
    models = root / "models"
    spm = sentencepiece_model(root / "spm" / "spiece.model")
    t5_tokenizer_folder(root / "siglip-tokenizer", spm, context=16)
    exports = {
        "tiny-openclip-vit": ("open_clip:tiny-openclip-vit", {}),
        "tiny-openclip-vit-fp16": ("open_clip:tiny-openclip-vit", {"fp16": True}),
        "tiny-mobileclip-s1-fp16": ("open_clip:tiny-mobileclip-s1", {"fp16": True}),
        "tiny-openclip-siglip": (
            "open_clip:tiny-openclip-siglip",
            {"tokenizer_dir": root / "siglip-tokenizer"},
        ),
        "tiny-siglip": (f"hf:{siglip_folder(root / 'siglip-hf', 'spm')}", {}),
        "tiny-siglip2": (f"hf:{siglip_folder(root / 'siglip2-hf', 'gemma')}", {}),
        "tiny-siglip-mask": (f"hf:{root / 'siglip-hf'}", {"text_attention_mask": True}),
    }
    for name, (source, options) in exports.items():
        torch.manual_seed(0)  # the tests rebuild the same random weights in open_clip
        export_model(source, models / name, **options)  # type: ignore[arg-type]
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[Server]:
    with run_server(repo, "--models-dir", str(repo / "models"), "--store-engine", "none") as srv:
        yield srv


def _embed(server: Server, model: str, inputs: list[str], modality: str = "text") -> np.ndarray:
    body = {"model": model, "input": inputs, "modality": modality}
    got = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60)
    assert got.status_code == 200, got.text
    return np.array([d["embedding"] for d in got.json()["data"]])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(_unit(a) * _unit(b), axis=-1)))


@pytest.mark.parametrize("name", OPEN_CLIP_MODELS + HF_MODELS + ["tiny-openclip-vit-fp16"])
def test_parity_report_covers_what_users_send(repo: Path, name: str) -> None:
    parity = load_manifest(repo / "models" / name).parity
    threshold = 0.999 if name in FP16 else 0.9999
    assert parity["passed"] and parity["threshold"] == threshold
    assert parity["image"]["min_cosine"] >= threshold and parity["text"]["min_cosine"] >= threshold
    assert parity["token_ids_equal"] and parity["token_mismatches"] == []
    images = parity["cases"]["image"]
    for case in ("rgba.png", "la.png", "palette.png", "gray16.png", "cmyk.jpeg", "large.jpeg"):
        assert case in images
    assert images["exif_rotated_ignored.jpeg"] >= threshold  # EXIF off: the source's pixels
    texts = parity["cases"]["text"]
    assert {"long[1]", "non_ascii[2]", "emoji[0]", "html[1]"} <= set(texts)
    deviations = {d["name"]: d for d in parity["deviations"]}
    assert {"exif_orientation", "16bit_grayscale", "jpeg_draft_decode"} <= set(deviations)
    assert deviations["jpeg_draft_decode"]["min_cosine"] >= deviations["jpeg_draft_decode"]["bound"]
    if name in ("tiny-siglip", "tiny-siglip-mask"):
        assert {"special_token_text", "grapheme_normalisation"} <= set(deviations)


@pytest.mark.parametrize("name", OPEN_CLIP_MODELS + HF_MODELS + ["tiny-openclip-vit-fp16"])
def test_every_self_attention_is_one_fused_node(repo: Path, name: str) -> None:
    """Each tower's two transformer layers run one fused Attention node each, except where the
    module cannot be: MobileCLIP's FastViT image tower has no self-attention module we know (its
    graph is still fused: GELUs, loadable after fp16 conversion) and a text call with a padding
    mask keeps its attention as traced. The fused graphs passed the parity report above."""
    manifest = load_manifest(repo / "models" / name)
    fusions = manifest.export["fusions"]
    unfused = {("tiny-mobileclip-s1-fp16", "image"), ("tiny-siglip-mask", "text")}
    for tower in ("image", "text"):
        fused = fusions[tower]
        assert fused["kept"] and fused["rejected"] == "", fused
        if (name, tower) in unfused:
            assert fused["attention_fused"] == 0 and "Attention" not in fused["ops"], fused
        else:
            assert fused["attention_modules"] == fused["attention_fused"] == 2, fused
            assert fused["ops"]["Attention"] == 2, fused
    # OpenCLIP adds all 77 position embeddings and SigLIP pools the last position: neither
    # text tower may be cut after the longest text (HF CLIP's may, test_export_hf)
    assert manifest.towers["text"].trim_padding is False


def _open_clip_reference(name: str, repo: Path) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's own model, transform and tokenizer (the local folder standing in for the
    hub tokenizer the config names), on raw image files."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    config = name.removesuffix("-fp16")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(config)
    model.eval()
    text_cfg = open_clip.get_model_config(config)["text_cfg"]
    if "hf_tokenizer_name" in text_cfg:
        assert text_cfg["hf_tokenizer_name"] == ABSENT_HUB_TOKENIZER
        tokenizer = HFTokenizer(
            str(repo / "siglip-tokenizer"),
            context_length=text_cfg["context_length"],
            **text_cfg["tokenizer_kwargs"],
        )
    else:
        tokenizer = open_clip.get_tokenizer(config)
    with torch.no_grad():
        txt = model.encode_text(tokenizer(TEXTS)).numpy()
        pixels = torch.stack([preprocess(Image.open(io.BytesIO(d))) for d in IMAGES.values()])
        img = model.encode_image(pixels).numpy()
    return txt, img


@pytest.mark.parametrize("name", OPEN_CLIP_MODELS)
def test_served_open_clip_equals_open_clip(server: Server, repo: Path, name: str) -> None:
    """Texts and images (RGBA: alpha dropped, palette: resized with NEAREST) through HTTP."""
    ref_txt, ref_img = _open_clip_reference(name, repo)
    threshold = 0.999 if name in FP16 else 0.9999
    assert _min_cos(_embed(server, name, TEXTS), ref_txt) >= threshold
    uris = [data_uri(d) for d in IMAGES.values()]
    assert _min_cos(_embed(server, name, uris, "image"), ref_img) >= threshold


def _hf_reference(folder: Path, mask: bool) -> tuple[np.ndarray, np.ndarray]:
    """transformers' own processor, tokenizer and model, called as the family was trained
    (input_ids only) or, with `mask`, with the attention mask its processors return."""
    from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

    model = SiglipModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    enc = tokenizer(
        TEXTS, padding="max_length", truncation=True, max_length=16, return_tensors="pt"
    )
    px = processor(images=[Image.open(io.BytesIO(d)) for d in IMAGES.values()], return_tensors="pt")
    with torch.no_grad():
        kwargs = {"attention_mask": enc["attention_mask"]} if mask else {}
        txt = model.get_text_features(input_ids=enc["input_ids"], **kwargs).pooler_output
        img = model.get_image_features(pixel_values=px["pixel_values"]).pooler_output
    return txt.numpy(), img.numpy()


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("tiny-siglip", "siglip-hf"),
        ("tiny-siglip2", "siglip2-hf"),
        ("tiny-siglip-mask", "siglip-hf"),
    ],
)
def test_served_siglip_equals_transformers(
    server: Server, repo: Path, name: str, folder: str
) -> None:
    """SigLIP as shipped (spiece.model, SiglipTokenizer's canonicalisation), SigLIP 2 (left
    padding) and the mask call when asked for it; images composited onto white as transformers
    does."""
    mask = name.endswith("-mask")
    ref_txt, ref_img = _hf_reference(repo / folder, mask)
    assert _min_cos(_embed(server, name, TEXTS), ref_txt) >= 0.9999
    uris = [data_uri(d) for d in IMAGES.values()]
    assert _min_cos(_embed(server, name, uris, "image"), ref_img) >= 0.9999


def test_text_call_is_a_manifest_field(repo: Path) -> None:
    """SigLIP is served as trained (no mask; the mask call gives other embeddings); asked
    for, the mask becomes a tower input and parity compares against the call that passes it."""
    plain = load_manifest(repo / "models" / "tiny-siglip")
    masked = load_manifest(repo / "models" / "tiny-siglip-mask")
    assert plain.text is not None and masked.text is not None
    assert not plain.text.attention_mask and masked.text.attention_mask
    assert [i.name for i in plain.towers["text"].inputs] == ["input_ids"]
    assert [i.name for i in masked.towers["text"].inputs] == ["input_ids", "attention_mask"]
    assert plain.parity["text_call"] == "get_text_features(input_ids)"
    assert masked.parity["text_call"] == "get_text_features(input_ids, attention_mask)"
    assert (
        'name: "attention_mask"'
        in (repo / "models" / "tiny-siglip-mask" / "text" / "config.pbtxt").read_text()
    )
    trained, _ = _hf_reference(repo / "siglip-hf", mask=False)
    documented, _ = _hf_reference(repo / "siglip-hf", mask=True)
    assert _min_cos(trained, documented) < 0.999  # the two calls really differ


def test_left_padding_is_honoured(repo: Path) -> None:
    manifest = load_manifest(repo / "models" / "tiny-siglip2")
    assert manifest.text is not None and manifest.text.padding_side == "left"
    siglip = load_manifest(repo / "models" / "tiny-siglip")
    assert siglip.text is not None and siglip.text.padding_side == "right"


def test_token_id_failures_say_which_ids_differ_and_why(repo: Path, tmp_path: Path) -> None:
    """The same SigLIP 2 export told to pad on the right: parity fails on token ids and says
    where and why."""
    broken = tmp_path / "tiny-siglip2"
    broken.mkdir()
    for item in (repo / "models" / "tiny-siglip2").iterdir():
        if item.name != "clipserve.json":
            (broken / item.name).symlink_to(item)
    manifest = json.loads((repo / "models" / "tiny-siglip2" / "clipserve.json").read_text())
    manifest["text"]["padding_side"] = "right"
    (broken / "clipserve.json").write_text(json.dumps(manifest))
    report = measure(load_hf(str(repo / "siglip2-hf")), load_manifest(broken), broken)
    assert not report.passed and not report.token_ids_equal
    assert report.token_mismatches
    assert all("the source pads on the left" in line for line in report.token_mismatches[:3])
    assert "positions" in report.token_mismatches[0]
    assert any("token ids equal to source tokenizer: False" in line for line in report.lines())


def test_token_ids_are_part_of_passed(repo: Path, tmp_path: Path) -> None:
    """Other padding ids after the end-of-text token leave open_clip's causal text tower's
    output unchanged: the embeddings pass, the token ids do not, so the report fails."""
    from service.export.openclip import load_open_clip

    source = repo / "models" / "tiny-openclip-vit"
    changed = tmp_path / "tiny-openclip-vit"
    changed.mkdir()
    for item in source.iterdir():
        if item.name != "clipserve.json":
            (changed / item.name).symlink_to(item)
    manifest = json.loads((source / "clipserve.json").read_text())
    manifest["text"]["pad_id"] = 5
    (changed / "clipserve.json").write_text(json.dumps(manifest))
    torch.manual_seed(0)
    report = measure(load_open_clip("tiny-openclip-vit"), load_manifest(changed), changed)
    assert report.text.min_cosine >= 0.9999  # the embeddings agree...
    assert not report.token_ids_equal and not report.passed  # ...the ids do not
    assert "other padding ids (ours 5)" in report.token_mismatches[0]


def test_exif_orientation_setting_through_http(repo: Path, tmp_path: Path) -> None:
    """Default: a phone photo is embedded upright. exif_transpose=false: as the source
    frameworks embed it (the stored pixels)."""
    stored = noise(80, 60, seed=9)
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = data_uri(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    upright = data_uri(encode(stored.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95))
    plain = data_uri(encode(stored, "JPEG", quality=95))
    found = {}
    for flag in ("--exif-transpose", "--no-exif-transpose"):
        with run_server(
            tmp_path,
            "--models-dir",
            str(repo / "models"),
            "--models",
            "tiny-openclip-vit",
            "--store-engine",
            "none",
            flag,
        ) as srv:
            found[flag] = _embed(srv, "tiny-openclip-vit", [tagged, upright, plain], "image")
    on, off = found["--exif-transpose"], found["--no-exif-transpose"]
    assert _min_cos(on[0], on[1]) >= 0.9999 and _min_cos(off[0], off[2]) >= 0.9999
    assert _min_cos(on[0], off[0]) < 0.9999


def test_open_clip_hf_tokenizer_offline_is_one_line(tmp_path: Path) -> None:
    """ViT-B-16-SigLIP names a hub tokenizer: offline, without --tokenizer, one line that says
    what to do, before any weights load (it used to be a raw OSError traceback)."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "export",
            "--source",
            "open_clip:ViT-B-16-SigLIP",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **env},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "timm/ViT-B-16-SigLIP" in result.stderr and "--tokenizer DIR" in result.stderr


def test_open_clip_tokenizer_kwargs_are_honoured(repo: Path) -> None:
    """The config's `clean` and context length, not hard-coded ones."""
    manifest = load_manifest(repo / "models" / "tiny-openclip-siglip")
    assert manifest.text is not None
    assert manifest.text.clean == "canonicalize" and manifest.text.context_length == 16
    assert manifest.source["hf_tokenizer"] == ABSENT_HUB_TOKENIZER
    vit = load_manifest(repo / "models" / "tiny-openclip-vit")
    assert vit.text is not None and vit.text.clean == "clip" and vit.text.lowercase


def test_mobileclip_s1_fp16_keeps_attention_scores_in_fp32(repo: Path) -> None:
    """FastViT-MCi's attention in fp16 made onnxruntime fail to load the graph ("Tensor type
    mismatch. T != MLFloat16"): the score path stays fp32, the rest is half precision."""
    import onnx
    import onnxruntime as ort

    path = repo / "models" / "tiny-mobileclip-s1-fp16" / "image" / "1" / "model.onnx"
    graph = onnx.load(str(path)).graph
    halves = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > len(graph.initializer) // 2
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_all_families_listed(server: Server) -> None:
    models = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
    assert set(models) >= set(OPEN_CLIP_MODELS) | set(HF_MODELS) | {"tiny-openclip-vit-fp16"}
    assert models["tiny-siglip"]["family"] == "siglip"
    assert models["tiny-openclip-siglip"]["family"] == "siglip"
    assert models["tiny-openclip-vit-fp16"]["precision"] == {"image": "fp16", "text": "fp16"}


def test_siglip_scores_by_sigmoid(server: Server, repo: Path) -> None:
    image = encode(noise(90, 70, seed=6), "PNG")
    body = {
        "model": "tiny-siglip",
        "images": [data_uri(image)],
        "labels": ["cat", "dog"],
        "templates": ["a photo of the {}"],
        "top_k": 2,
    }
    scores = httpx.post(f"{server.url}/v1/classify", json=body).json()["results"][0]
    manifest = load_manifest(repo / "models" / "tiny-siglip")
    assert manifest.family == "siglip" and manifest.scores.logit_bias == pytest.approx(-3.0)
    img = _embed(server, "tiny-siglip", [data_uri(image)], "image")[0]
    cat = _embed(server, "tiny-siglip", ["a photo of the cat"])[0]
    expected = 1 / (1 + np.exp(-(10.0 * float(img @ cat) - 3.0)))
    got_cat = next(s["score"] for s in scores if s["label"] == "cat")
    assert got_cat == pytest.approx(expected, abs=1e-3)
    assert abs(sum(s["score"] for s in scores) - 1) > 1e-3  # independent sigmoids, no softmax


def test_tokenizer_folder_only_where_a_config_names_one(repo: Path, tmp_path: Path) -> None:
    from service.export import ExportError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match="does not apply"):
        export_model("open_clip:tiny-openclip-vit", tmp_path / "x", tokenizer_dir=empty)
    with pytest.raises(ExportError, match="--tokenizer is for"):
        export_model(f"hf:{repo / 'siglip-hf'}", tmp_path / "y", tokenizer_dir=empty)
    with pytest.raises(ExportError, match="cannot load tokenizer"):
        export_model("open_clip:tiny-openclip-siglip", tmp_path / "z", tokenizer_dir=empty)
