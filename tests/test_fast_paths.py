"""The fast paths give the reference path's embeddings: the uint8 image tower (normalisation in
the graph) and I/O binding through per-bucket buffers (padding, chunking, concurrent batches).

Here they run on the CPU provider; the same code serves CUDA, where `io_binding` is on by default.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.imaging import ImageLimits, ImagePreprocessor
from service.manifest import load_manifest
from service.runners.bound import BoundRunner, buckets_up_to
from service.runners.onnx import OrtOptions, OrtTowerRunner
from tests.images import blocks, data_uri, encode, noise
from tests.server import run_server


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def _photos() -> list[bytes]:
    return [
        encode(noise(600, 400, seed=1), "JPEG"),
        encode(blocks(96, 64, seed=2), "PNG"),
        encode(noise(33, 200, seed=3), "WEBP"),
        encode(blocks(1600, 1200, seed=4), "JPEG"),  # draft-decoded
    ]


def test_bucket_sizes() -> None:
    assert buckets_up_to(1) == (1,)
    assert buckets_up_to(64) == (1, 2, 4, 8, 16, 32, 64)
    assert buckets_up_to(100) == (1, 2, 4, 8, 16, 32, 64, 100)


def test_shipped_uint8_variant_equals_the_float_tower(model_dir: Path) -> None:
    manifest = load_manifest(model_dir)
    image = manifest.towers["image"]
    variant = image.uint8_variant
    assert variant is not None and manifest.image is not None
    assert manifest.parity["image_uint8"]["min_cosine"] >= 0.9999  # against transformers
    pre = ImagePreprocessor(manifest.image, ImageLimits())
    raw = np.stack([pre.uint8(b) for b in _photos()])
    floats = np.stack([pre.normalize(p) for p in raw])
    ref = OrtTowerRunner(image.onnx_file(model_dir), image, OrtOptions())
    fast = OrtTowerRunner(variant.onnx_file(model_dir), variant, OrtOptions())
    assert np.min(_cos(fast.run({"pixels": raw}), ref.run({"pixel_values": floats}))) >= 0.9999


@pytest.mark.parametrize("tower", ["image", "text"])
def test_io_binding_equals_a_plain_run(model_dir: Path, tower: str) -> None:
    """Padded up to buckets, chunked past the largest, and from several threads at once (each
    batch takes its own buffer set): always the plain run's embeddings, in order."""
    manifest = load_manifest(model_dir)
    spec = manifest.towers[tower]
    plain = OrtTowerRunner(spec.onnx_file(model_dir), spec, OrtOptions(max_batch_size=16))
    bound = OrtTowerRunner(
        spec.onnx_file(model_dir), spec, OrtOptions(max_batch_size=16, io_binding=True)
    )
    assert bound.bound is not None and plain.bound is None
    rng = np.random.default_rng(0)

    def feeds(n: int) -> dict[str, np.ndarray]:
        shape = [n, *spec.inputs[0].shape[1:]]
        if tower == "image":
            return {"pixel_values": rng.standard_normal(shape).astype(np.float32)}
        ids = rng.integers(1, 20, size=shape)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    batches = [feeds(n) for n in (1, 3, 5, 16, 37, 2, 9, 16, 1, 4, 7, 33)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(bound.run, batches))
    for batch, out in zip(batches, outs, strict=True):
        ref = plain.run(batch)
        assert out.shape == ref.shape
        assert np.min(_cos(out, ref)) >= 0.99999


def test_io_binding_that_cannot_run_falls_back_at_its_first_run(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Buffers on a device this onnxruntime build lacks: the first run (the warm-up at start-up)
    logs why and serves without binding, with the same embeddings."""
    spec = load_manifest(model_dir).towers["text"]
    runner = OrtTowerRunner(spec.onnx_file(model_dir), spec, OrtOptions(io_binding=True))
    plain = OrtTowerRunner(spec.onnx_file(model_dir), spec, OrtOptions())
    assert runner.bound is not None
    runner.bound = BoundRunner(runner.session, spec, "cuda", (1, 2, 4), cuda_graph=False)
    ids = np.arange(2 * 16).reshape(2, 16) % 30
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    assert np.min(_cos(runner.run(feeds), plain.run(feeds))) >= 0.99999
    assert runner.bound is None and "I/O binding failed" in caplog.text


def test_served_fast_path_equals_reference_path(model_dir: Path, tmp_path: Path) -> None:
    """Over HTTP: uint8 pixels + I/O binding + decode processes against float pixels normalised
    on the host with a plain run."""
    uris = [data_uri(b) for b in _photos()]
    base = ["--models-dir", str(model_dir.parent), "--models", model_dir.name]
    runs = {
        "fast": ["--image-input", "uint8", "--io-binding", "on", "--decode-processes", "2"],
        "reference": ["--image-input", "float32", "--io-binding", "off"],
    }
    got = {}
    for name, flags in runs.items():
        with run_server(tmp_path, *base, *flags) as srv:
            body = {"input": uris, "modality": "image"}
            r = httpx.post(f"{srv.url}/v1/embeddings", json=body, timeout=60)
            assert r.status_code == 200, r.text
            got[name] = np.array([d["embedding"] for d in r.json()["data"]])
    assert np.min(_cos(got["fast"], got["reference"])) >= 0.9999
