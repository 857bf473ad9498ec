"""Export tiny random-weight models of each family from configs, serve them all from one model
repository through the HTTP API, and compare with the source frameworks' own outputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from service.export import export_model
from service.manifest import load_manifest
from tests.images import data_uri, encode, noise
from tests.server import Server, run_server
from training.tiny_hf import word_tokenizer

pytestmark = [pytest.mark.export, pytest.mark.slow]

TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
OPEN_CLIP_CONFIGS = {
    "tiny-openclip-vit": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": TEXT_CFG,
    },
    # MobileCLIP's image towers are timm FastViTs: the same wiring, the smallest FastViT
    "tiny-mobileclip": {
        "embed_dim": 32,
        "vision_cfg": {
            "timm_model_name": "fastvit_t8",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": 64,
        },
        "text_cfg": TEXT_CFG,
    },
}
TEXTS = [
    "a photo of a cat",
    "Fish &amp; chips, twice!",
    "\uff26\uff35\uff2c\uff2c width and \ufb01ne ligatures",  # full width, ligature
]


@pytest.fixture(scope="module")
def open_clip_configs(tmp_path_factory: pytest.TempPathFactory) -> None:
    import open_clip

    folder = tmp_path_factory.mktemp("oc-configs")
    for name, cfg in OPEN_CLIP_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)


def siglip_folder(folder: Path) -> Path:
    from transformers import (
        PreTrainedTokenizerFast,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    tok = word_tokenizer(["a", "photo", "of", "the", "cat", "dog", "fish", "chips", "twice"])
    text = {
        "vocab_size": tok.get_vocab_size(),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }
    vision = {
        "image_size": 48,
        "patch_size": 8,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(np.log(10.0))
        model.logit_bias.fill_(-3.0)
    model.save_pretrained(folder)
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        eos_token="<|endoftext|>",
        model_max_length=16,
    ).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 48, "width": 48}, resample=2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, open_clip_configs: None) -> Path:
    root = tmp_path_factory.mktemp("families")
    models = root / "models"
    for name in OPEN_CLIP_CONFIGS:
        torch.manual_seed(0)  # the tests rebuild the same random weights in open_clip
        export_model(f"open_clip:{name}", models / name)
    export_model(f"hf:{siglip_folder(root / 'siglip-hf')}", models / "tiny-siglip")
    torch.manual_seed(0)
    export_model("open_clip:tiny-openclip-vit", models / "tiny-openclip-vit-fp16", fp16=True)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[Server]:
    with run_server(repo, "--models-dir", str(repo / "models")) as srv:
        yield srv


@pytest.mark.parametrize(
    "name", ["tiny-openclip-vit", "tiny-mobileclip", "tiny-siglip", "tiny-openclip-vit-fp16"]
)
def test_parity_recorded_and_passing(repo: Path, name: str) -> None:
    manifest = load_manifest(repo / "models" / name)
    parity = manifest.parity
    threshold = 0.999 if name.endswith("fp16") else 0.9999
    assert parity["passed"] and parity["threshold"] == threshold
    assert parity["image"]["min_cosine"] >= threshold and parity["text"]["min_cosine"] >= threshold
    assert parity["token_ids_equal"] and parity["pixel_p99_abs_diff"] <= 0.05
    # every transformer layer's self-attention is one fused node (FastViT has none)
    fusions = manifest.export["fusions"]
    for tower in ("text",) if name == "tiny-mobileclip" else ("image", "text"):
        fused = fusions[tower]
        assert fused["kept"] and fused["attention_modules"] == fused["attention_fused"] == 2
        assert fused["ops"]["Attention"] == 2
    # OpenCLIP adds all 77 position embeddings and SigLIP pools the last position: neither
    # text tower may be cut after the longest text (HF CLIP's may, test_export_hf)
    assert manifest.towers["text"].trim_padding is False


def _served(server: Server, model: str, image: bytes) -> tuple[np.ndarray, np.ndarray]:
    txt = httpx.post(f"{server.url}/v1/embeddings", json={"model": model, "input": TEXTS}).json()
    img = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": model, "input": [data_uri(image)], "modality": "image"},
    ).json()
    return (
        np.array([d["embedding"] for d in txt["data"]]),
        np.array(img["data"][0]["embedding"]),
    )


@pytest.mark.parametrize("name", ["tiny-openclip-vit", "tiny-mobileclip"])
def test_served_open_clip_equals_open_clip(server: Server, name: str) -> None:
    """open_clip's own preprocess, tokenizer and encoders on the same (seeded) weights."""
    import io

    import open_clip
    from PIL import Image

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    image = encode(noise(90, 70, seed=5), "PNG")
    with torch.no_grad():
        ref_txt = model.encode_text(open_clip.get_tokenizer(name)(TEXTS), normalize=True).numpy()
        pixels = preprocess(Image.open(io.BytesIO(image)).convert("RGB"))[None]
        ref_img = model.encode_image(pixels, normalize=True).numpy()[0]
    got_txt, got_img = _served(server, name, image)
    assert np.min(np.sum(got_txt * ref_txt, axis=1)) >= 0.9999
    assert float(got_img @ ref_img) >= 0.9999


def test_served_siglip_equals_transformers_and_scores_by_sigmoid(
    server: Server, repo: Path
) -> None:
    import io

    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

    folder = repo / "siglip-hf"
    model = SiglipModel.from_pretrained(folder).eval()
    image = encode(noise(90, 70, seed=6), "PNG")
    texts = ["a photo of the cat", "fish and chips twice", "dog"]
    with torch.no_grad():
        ids = AutoTokenizer.from_pretrained(folder)(
            texts, padding="max_length", max_length=16, return_tensors="pt"
        )["input_ids"]
        ref_txt = model.get_text_features(input_ids=ids).pooler_output.numpy()
        px = AutoImageProcessor.from_pretrained(folder)(
            images=[Image.open(io.BytesIO(image)).convert("RGB")], return_tensors="pt"
        )["pixel_values"]
        ref_img = model.get_image_features(pixel_values=px).pooler_output.numpy()[0]
    ref_txt /= np.linalg.norm(ref_txt, axis=1, keepdims=True)
    ref_img /= np.linalg.norm(ref_img)
    got = httpx.post(
        f"{server.url}/v1/embeddings", json={"model": "tiny-siglip", "input": texts}
    ).json()
    got_txt = np.array([d["embedding"] for d in got["data"]])
    assert np.min(np.sum(got_txt * ref_txt, axis=1)) >= 0.9999
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
    cat = ref_txt[0]
    expected = 1 / (1 + np.exp(-(10.0 * float(ref_img @ cat) - 3.0)))
    got_cat = next(s["score"] for s in scores if s["label"] == "cat")
    assert got_cat == pytest.approx(expected, abs=1e-3)
    assert abs(sum(s["score"] for s in scores) - 1) > 1e-3  # independent sigmoids, no softmax


def test_all_families_listed(server: Server) -> None:
    models = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
    assert set(models) >= set(OPEN_CLIP_CONFIGS) | {"tiny-siglip", "tiny-openclip-vit-fp16"}
    assert models["tiny-siglip"]["family"] == "siglip"
    assert models["tiny-openclip-vit-fp16"]["precision"] == {"image": "fp16", "text": "fp16"}
