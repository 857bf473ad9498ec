"""Tower graphs side by side through our runner: plain vs fused exports, fp32 vs int8 towers.

    python benchmarks/tower_graphs.py plain=/tmp/b32-plain/m fused=/tmp/b32/m int8=/tmp/b32/m:int8
        [--batches 1 8 32] [--rounds 5] [--seconds 0.5] [--out result.json]

Each argument is `label=model_folder[:int8]`; the graph measured is the one the server
would serve for that precision (the image tower's uint8-input variant where there is one). On a
shared, noisy machine only interleaved measurements compare: every round runs every graph, tower
and batch size once for `--seconds`, in turn, and the table gives the median over rounds of the
mean time per batch (wall clock), and items/s from it. With `--clock cpu` it is the process's
CPU time per batch instead: what the graph costs, nearly independent of what else the machine
runs (use it with `--threads 1`, where CPU time is the work itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.manifest import TensorSpec, load_manifest
from service.runners.base import NUMPY_DTYPES, Precision, serving_spec
from service.runners.onnx import OrtOptions, OrtTowerRunner


def feeds(
    spec_inputs: list[TensorSpec], batch: int, tokens: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random pixels, or token ids of `tokens`-token texts padded to the context, with the
    attention mask the tokenizer gives (a tower with `trim_padding` runs without the padding)."""
    out = {}
    for inp in spec_inputs:
        shape = [batch, *inp.shape[1:]]
        if inp.dtype in ("int64", "int32"):
            ids = np.zeros(shape, dtype=NUMPY_DTYPES[inp.dtype])
            ids[:, :tokens] = rng.integers(1, 100, (batch, min(tokens, shape[1])))
            out[inp.name] = ids
            out["attention_mask"] = (ids != 0).astype(np.int64)
        elif inp.dtype == "uint8":
            out[inp.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            out[inp.name] = rng.standard_normal(shape).astype(NUMPY_DTYPES[inp.dtype])
    return out


def mean_batch_ms(
    runner: OrtTowerRunner, feed: dict[str, np.ndarray], seconds: float, clock: str
) -> float:
    runner.run(feed)
    runs, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds or runs < 2:
        runner.run(feed)
        runs += 1
    spent = time.process_time() - cpu if clock == "cpu" else time.perf_counter() - started
    return spent * 1000 / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("graphs", nargs="+", help="label=model_folder[:int8]")
    parser.add_argument("--towers", nargs="+", default=["image", "text"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: auto)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument(
        "--text-tokens", type=int, default=10, help="tokens per text, padding aside"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    opts = OrtOptions(intra_op_threads=args.threads, max_batch_size=max(args.batches))
    rng = np.random.default_rng(0)
    runners = {}
    for graph in args.graphs:
        label, _, where = graph.partition("=")
        folder, _, precision = where.partition(":")
        model_dir = Path(folder)
        manifest = load_manifest(model_dir)
        for tower in args.towers:
            chosen: Precision = "int8" if precision == "int8" else "float"
            spec = serving_spec(model_dir, manifest, tower, "auto", chosen)
            runner = OrtTowerRunner(spec.onnx_file(model_dir), spec, opts)
            batches = {b: feeds(spec.inputs, b, args.text_tokens, rng) for b in args.batches}
            runners[(label, tower)] = (runner, batches)
    samples: dict[tuple[str, str, int], list[float]] = {}
    for round_ in range(args.rounds):
        for (label, tower), (runner, batches) in runners.items():
            for batch, feed in batches.items():
                ms = mean_batch_ms(runner, feed, args.seconds, args.clock)
                samples.setdefault((label, tower, batch), []).append(ms)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    rows: list[dict[str, Any]] = []
    for (label, tower, batch), values in samples.items():
        ms = statistics.median(values)
        rows.append(
            {
                "graph": label,
                "tower": tower,
                "batch": batch,
                "median_batch_ms": round(ms, 2),
                "items_per_s": round(batch * 1000 / ms, 1),
                "rounds_ms": [round(v, 2) for v in values],
            }
        )
    labels = list(dict.fromkeys(r["graph"] for r in rows))
    first = labels[0]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads or 'auto'} intra-op threads, {args.clock} ms per batch"
    )
    print("| tower | batch | " + " | ".join(f"{g} ms (items/s)" for g in labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for tower in args.towers:
        for batch in args.batches:
            by = {r["graph"]: r for r in rows if r["tower"] == tower and r["batch"] == batch}
            cells = []
            for g in labels:
                r = by[g]
                speedup = by[first]["median_batch_ms"] / r["median_batch_ms"]
                ratio = "" if g == first else f", {speedup:.2f}x"
                cells.append(f"{r['median_batch_ms']} ({r['items_per_s']}{ratio})")
            print(f"| {tower} | {batch} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
