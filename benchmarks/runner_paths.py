"""Image tower paths through our runner, from pre-decoded uint8 pixels to embeddings.

    python benchmarks/runner_paths.py --model models/mnist-clip [--providers CUDAExecutionProvider]
        [--batches 1 32 256] [--seconds 3] [--out result.json]

Paths: `float` normalises each image on the host (the reference path) and sends float32;
`uint8` sends the pixels as decoded to the tower variant that normalises in its graph. Each with
a plain `session.run` and with I/O binding through per-bucket buffers. Prints items/s and the
per-batch latency percentiles.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.imaging import Normalizer
from service.manifest import load_manifest
from service.runners.onnx import OrtOptions, OrtTowerRunner


def measure(step: Callable[[], object], batch: int, seconds: float) -> dict[str, float]:
    step()  # warm-up (and CUDA graph capture)
    times = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    return {
        "items_per_s": round(batch * len(times) / sum(times), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def make_step(
    runner: OrtTowerRunner, name: str, pixels: np.ndarray, normalize: Normalizer | None
) -> Callable[[], object]:
    """One batch from uint8 pixels: normalised on the host first for the float tower."""

    def step() -> object:
        feed = pixels if normalize is None else np.stack([normalize(p) for p in pixels])
        return runner.run({name: feed})

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/mnist-clip"))
    parser.add_argument("--providers", default="CPUExecutionProvider")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cuda-graph", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    manifest = load_manifest(args.model)
    image, pre = manifest.towers["image"], manifest.image
    assert image.uint8_variant is not None and pre is not None, "export with --uint8-variant"
    providers = tuple(args.providers.split(","))
    normalize = Normalizer(pre)
    rng = np.random.default_rng(0)
    results = []
    print(f"{args.model.name} on {providers[0]}, pre-decoded {pre.size}x{pre.size} uint8 pixels")
    print(f"{'path':<8} {'binding':<8} {'batch':>5} {'items/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for path, spec in (("float", image), ("uint8", image.uint8_variant)):
        for binding in (False, True):
            opts = OrtOptions(
                providers=providers,
                max_batch_size=max(args.batches),
                io_binding=binding,
                cuda_graph=args.cuda_graph and binding,
            )
            runner = OrtTowerRunner(spec.onnx_file(args.model), spec, opts)
            name = spec.inputs[0].name
            for batch in args.batches:
                pixels = rng.integers(0, 256, (batch, pre.size, pre.size, 3), dtype=np.uint8)
                row = {"path": path, "io_binding": binding, "batch": batch}
                step = make_step(runner, name, pixels, normalize if path == "float" else None)
                row.update(measure(step, batch, args.seconds))
                results.append(row)
                print(
                    f"{path:<8} {'on' if binding else 'off':<8} {batch:>5} "
                    f"{row['items_per_s']:>10} {row['p50_ms']:>8} {row['p99_ms']:>8}",
                    flush=True,
                )
    if args.out:
        args.out.write_text(json.dumps({"providers": providers, "results": results}, indent=2))


if __name__ == "__main__":
    main()
