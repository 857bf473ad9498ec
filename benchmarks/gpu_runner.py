"""On a GPU machine: export a ViT-B/32-shaped CLIP (random weights) in fp32 and fp16, check
parity on the CUDA provider, and measure tower throughput at batch 1/32/256.

    python benchmarks/gpu_runner.py --repo /tmp/repo --out results.json

The model is `transformers.CLIPConfig()`'s defaults (ViT-B/32 image tower, 12-layer text tower,
512-d embeddings) with a small word-level tokenizer; weights are random, shapes are real.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def build(folder: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from training.tiny_hf import save_hf_folder, word_tokenizer

    words = [
        "a",
        "photo",
        "of",
        "the",
        "cat",
        "dog",
        "astronaut",
        "coffee",
        "rocket",
        "red",
        "car",
        "number",
        "seven",
        "digit",
    ]
    tok = word_tokenizer(words)
    torch.manual_seed(0)
    config = CLIPConfig()
    config.text_config.eos_token_id, config.text_config.bos_token_id = 3, 2
    config.text_config.pad_token_id = 0
    model = CLIPModel(config).eval()
    save_hf_folder(model, tok, folder, 224, int(config.text_config.max_position_embeddings))


def throughput(runner: object, feeds: dict[str, np.ndarray], seconds: float = 3.0) -> float:
    runner.run(feeds)  # type: ignore[attr-defined]
    batch = len(next(iter(feeds.values())))
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runner.run(feeds)  # type: ignore[attr-defined]
        n += 1
    return n * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", default="/tmp/repo")
    parser.add_argument("--out", default="gpu_results.json")
    args = parser.parse_args()
    import torch  # noqa: F401  (loads the CUDA libraries onnxruntime-gpu needs)

    from service.export import export_model
    from service.export.hf import load_hf
    from service.export.parity import measure
    from service.manifest import load_manifest
    from service.runners.onnx import OrtOptions, OrtTowerRunner

    hf = Path("/tmp/vitb32-hf")
    if not hf.exists():
        build(hf)
    repo = Path(args.repo)
    results: dict[str, object] = {}
    cuda = OrtOptions(
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"), max_batch_size=256
    )
    for name, fp16 in (("vitb32", False), ("vitb32-fp16", True)):
        t = time.time()
        export_model(f"hf:{hf}", repo / name, fp16=fp16)
        manifest = load_manifest(repo / name)
        entry: dict[str, object] = {
            "export_s": round(time.time() - t, 1),
            "parity_cpu": manifest.parity,
        }
        report = measure(load_hf(str(hf)), manifest, repo / name, cuda)
        print(name, "on CUDA:", "\n".join(report.lines()), flush=True)
        entry["parity_cuda"] = report.as_dict()
        tput: dict[str, dict[int, float]] = {"image": {}, "text": {}}
        for tower in ("image", "text"):
            spec = manifest.towers[tower]
            runner = OrtTowerRunner(spec.onnx_file(repo / name), spec, cuda)
            assert runner.provider == "CUDAExecutionProvider", runner.provider
            for batch in (1, 32, 256):
                shape = [batch, *spec.inputs[0].shape[1:]]
                if tower == "image":
                    feeds = {"pixel_values": np.random.randn(*shape).astype(np.float32)}
                else:
                    ids = np.random.randint(4, 15, size=shape).astype(np.int64)
                    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
                tput[tower][batch] = round(throughput(runner, feeds), 1)
                print(f"{name} {tower} batch {batch}: {tput[tower][batch]} items/s", flush=True)
        entry["throughput_items_per_s"] = tput
        results[name] = entry
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
