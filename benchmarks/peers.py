"""Side by side with peers on the same weights: a small random CLIP saved in Hugging Face format
(so every peer can load it), exported for clipserve, then the same load against each server.

    python benchmarks/peers.py build /tmp/peer-clip      # HF folder + clipserve export (+ int8)
    python benchmarks/peer_clip_server.py build /tmp/peer-clip-cas   # clip-server's folder
    python benchmarks/peers.py run [--duration 6] [--out peers.json]

`run` starts clipserve (float towers), clipserve with `--precision int8`, Infinity
(.tools/infinity-venv) and clip-server (.tools/cas-venv, gRPC) once, pauses them all (SIGSTOP),
and for every load resumes one server at a time, so each is measured alone and the measurements
of a load are back to back. Loads: closed loop at each concurrency (1, 8, 32), one and eight
items per request, texts or 600x400 JPEGs (data URIs for HTTP, raw bytes for clip-server's
gRPC). The table gives each clipserve cell's ratio to the best peer of that cell and every
server's p99.

The model: CLIPConfig with a 224 px / patch 32 image tower and a 77-token text tower, width 256,
4 layers each, OpenAI CLIP's BPE vocabulary (from open_clip), random weights. Its int8 towers
are written with `--force`: on random weights zero-shot accuracy is chance either way, so the
accuracy gate means nothing here (the parity report still records their cosines).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools"


def build(folder: Path) -> None:
    import open_clip
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    from service.export import export_model
    from service.export.clip_bpe import clip_bpe_tokenizer

    simple = open_clip.get_tokenizer("ViT-B-32")
    tok = CLIPTokenizerFast(
        tokenizer_object=clip_bpe_tokenizer(simple),
        bos_token="<start_of_text>",
        eos_token="<end_of_text>",
        unk_token="<end_of_text>",
        pad_token="<end_of_text>",
        model_max_length=77,
    )
    layers = {
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
    }
    config = CLIPConfig(
        text_config={
            **layers,
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={**layers, "image_size": 224, "patch_size": 32},
        projection_dim=256,
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(folder)
    from training.mnist import write_image_folder

    held_out = folder.parent / f"{folder.name}-held-out"
    write_image_folder(held_out, 200)  # labelled images for the int8 report (see above)
    export_model(
        f"hf:{folder}",
        folder.parent / f"{folder.name}-repo" / folder.name,
        quantize="int8",
        eval_images=held_out,
        force=True,
    )


def _start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"{url} exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready:\n{log.read_text()[-2000:]}")


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    os.killpg(process.pid, sig)


Bench = Callable[[str, int, int, float], dict[str, Any]]


def _http_bench(url: str, model: str | None, path: str) -> Bench:
    from service.bench import BenchConfig, run_bench

    def bench(modality: str, items: int, concurrency: int, duration: float) -> dict[str, Any]:
        cfg = BenchConfig(
            url=url,
            model=model,
            modality=modality,
            concurrency=concurrency,
            batch=items,
            duration_s=duration,
            encoding="float",
            path=path,
        )
        r = asyncio.run(run_bench(cfg))
        return {"items_per_s": r.items_per_s, "errors": r.errors, **r.latency_ms}

    return bench


def _grpc_bench(modality: str, items: int, concurrency: int, duration: float) -> dict[str, Any]:
    cmd = [str(TOOLS / "cas-venv/bin/python"), str(ROOT / "benchmarks/peer_clip_server.py")]
    cmd += ["bench", "--modality", modality, "--concurrency", str(concurrency)]
    cmd += ["--batch", str(items)]
    cmd += ["--duration", str(duration), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    row = json.loads(out.strip().splitlines()[-1])
    return {k: row[k] for k in ("items_per_s", "errors", "p50", "p95", "p99")}


def run(
    hf: Path, duration: float, concurrency: list[int], items: list[int], out: Path | None
) -> None:
    logs = Path("/tmp/peers-logs")
    logs.mkdir(exist_ok=True)
    repo = hf.parent / f"{hf.name}-repo"
    ours = [sys.executable, "-m", "service", "serve", "--models-dir", str(repo), "--port", "8301"]
    infinity = [str(TOOLS / "infinity-venv/bin/infinity_emb"), "v2", "--model-id", str(hf)]
    infinity += ["--engine", "torch", "--device", "cpu", "--batch-size", "32", "--port", "8302"]
    cas_env = {**os.environ, "NO_VERSION_CHECK": "1", "JINA_OPTOUT_TELEMETRY": "1"}
    cas_env["OMP_NUM_THREADS"] = "1"  # its default oversubscribes small machines (2-2.5x slower)
    cas = [str(TOOLS / "cas-venv/bin/python"), "-m", "clip_server"]
    cas += [str(hf.parent / f"{hf.name}-cas" / "flow.yml")]
    int8 = [*ours[:-1], "8303", "--store-engine", "none", "--precision", "int8"]
    servers: dict[str, tuple[subprocess.Popen[bytes], Bench]] = {
        "clipserve": (
            _start([*ours, "--store-engine", "none"], logs / "clipserve.log"),
            _http_bench("http://127.0.0.1:8301", None, "/v1/embeddings"),
        ),
        "clipserve int8": (
            _start(int8, logs / "clipserve-int8.log"),
            _http_bench("http://127.0.0.1:8303", None, "/v1/embeddings"),
        ),
        "Infinity": (
            _start(infinity, logs / "infinity.log"),
            _http_bench("http://127.0.0.1:8302", str(hf), "/embeddings"),
        ),
        "clip-server": (_start(cas, logs / "clip-server.log", cas_env), _grpc_bench),
    }
    try:
        _wait_http("http://127.0.0.1:8301/readyz", servers["clipserve"][0], logs / "clipserve.log")
        _wait_http(
            "http://127.0.0.1:8303/readyz",
            servers["clipserve int8"][0],
            logs / "clipserve-int8.log",
        )
        _wait_http("http://127.0.0.1:8302/health", servers["Infinity"][0], logs / "infinity.log")
        time.sleep(20)  # clip-server's gateway + executor (its bench retries on warm-up)
        for process, _ in servers.values():
            _signal(process, signal.SIGSTOP)
        rows = []
        for modality in ("text", "image"):
            for n in items:
                for c in concurrency:
                    for name, (process, bench) in servers.items():
                        _signal(process, signal.SIGCONT)
                        try:
                            result = bench(modality, n, c, duration)
                        finally:
                            _signal(process, signal.SIGSTOP)
                        load = {"modality": modality, "items": n, "concurrency": c}
                        rows.append({"server": name, **load, **result})
                        print(json.dumps(rows[-1]), flush=True)
    finally:
        for process, _ in servers.values():
            _signal(process, signal.SIGCONT)
            _signal(process, signal.SIGTERM)
    print(table(rows))
    if out:
        out.write_text(json.dumps(rows, indent=2))


OURS = ["clipserve", "clipserve int8"]
PEERS = ["Infinity", "clip-server"]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown, one row per load: items/s of every server, each clipserve cell's ratio to the
    best peer of that load (the goal: >= 1.5x everywhere), and every server's p99."""
    head = "| load | " + " | ".join(f"{s} items/s" for s in OURS + PEERS)
    head += " | p99 ms: " + " / ".join(OURS + PEERS) + " |"
    lines = [head, "|" + "---|" * (len(OURS) + len(PEERS) + 2)]
    loads = sorted(
        {(r["modality"], r.get("items", 1), r["concurrency"]) for r in rows},
        key=lambda k: (k[0] != "text", k[1], k[2]),
    )
    for modality, n, c in loads:
        by = {
            r["server"]: r
            for r in rows
            if (r["modality"], r.get("items", 1), r["concurrency"]) == (modality, n, c)
        }
        best = max((by[p] for p in PEERS if p in by), key=lambda r: r["items_per_s"], default=None)
        cells = [f"{modality} x{n} c={c}"]
        for server in OURS + PEERS:
            r = by.get(server)
            if r is None:
                cells.append("-")
            elif server in OURS and best is not None:
                ratio = r["items_per_s"] / best["items_per_s"]
                cells.append(f"{r['items_per_s']:.1f} ({ratio:.2f}x {best['server']})")
            else:
                cells.append(f"{r['items_per_s']:.1f}")
        cells.append(" / ".join(f"{by[s]['p99']:.0f}" if s in by else "-" for s in OURS + PEERS))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("folder", type=Path)
    r = sub.add_parser("run")
    r.add_argument("--hf", type=Path, default=Path("/tmp/peer-clip"))
    r.add_argument("--duration", type=float, default=6.0)
    r.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    r.add_argument("--items", type=int, nargs="+", default=[1, 8], help="items per request")
    r.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.cmd == "build":
        build(args.folder)
    else:
        sys.path.insert(0, str(ROOT))
        run(args.hf, args.duration, args.concurrency, args.items, args.out)
