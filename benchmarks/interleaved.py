"""Two (or more) versions of the server under the same load, measured in turns: before/after on a
shared, noisy machine.

    git archive <commit> | tar -x -C /tmp/before          # the old code, as a plain folder
    python benchmarks/interleaved.py before=/tmp/before after=. --modality text \\
        --concurrency 32 [--batch 1] [--encoding base64] [--rounds 6] [--duration 8] \\
        [--serve-args "--store-engine none"] [--extra 'after:--precision int8']

Each `label=folder` runs `python -m service serve` from that folder (its own code, the same
settings and model, plus that label's `--extra` settings). All servers start once and are
paused (SIGSTOP) except the one being measured; every round measures each of them once, in
turn, with `clipserve bench` (closed loop) of this checkout, and the order alternates between
rounds. Prints the median over rounds of
items/s, p50 and p99 per server, each round's figures, and the server process's CPU time per
item (all its threads, from /proc): what the request path costs, which the machine's other
load disturbs far less than it disturbs throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.bench import BenchConfig, run_bench  # noqa: E402
from tests.server import free_port  # noqa: E402


def start(folder: Path, port: int, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "service", "serve", "--port", str(port), *args]
    env = {**os.environ, "PYTHONPATH": str(folder)}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            cmd, cwd=folder, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"{folder} exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{folder} not ready:\n{log.read_text()[-2000:]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("servers", nargs="+", help="label=folder with the code to serve")
    parser.add_argument("--modality", default="text", choices=["text", "image", "mixed"])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1, help="items per request")
    parser.add_argument("--encoding", default="base64", choices=["base64", "float"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--serve-args", default="--store-engine none", help="shared settings")
    parser.add_argument(
        "--extra", action="append", default=[], help="'label:settings' for one server only"
    )
    args = parser.parse_args()
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "interleaved-logs"
    logs.mkdir(exist_ok=True)
    running: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    results: dict[str, list[dict[str, float]]] = {}
    try:
        extra = dict(e.split(":", 1) for e in args.extra)
        for spec in args.servers:
            label, _, folder = spec.partition("=")
            port = free_port()
            settings = shlex.split(args.serve_args) + shlex.split(extra.get(label, ""))
            process = start(Path(folder).resolve(), port, settings, logs / f"{label}.log")
            os.killpg(process.pid, signal.SIGSTOP)
            running[label] = (process, port)
        for round_ in range(args.rounds):
            order = list(running) if round_ % 2 == 0 else list(reversed(running))
            for label in order:
                process, port = running[label]
                os.killpg(process.pid, signal.SIGCONT)
                cpu = cpu_seconds(process.pid)
                try:
                    cfg = BenchConfig(
                        url=f"http://127.0.0.1:{port}",
                        modality=args.modality,
                        concurrency=args.concurrency,
                        batch=args.batch,
                        duration_s=args.duration,
                        encoding=args.encoding,
                    )
                    r = asyncio.run(run_bench(cfg))
                finally:
                    os.killpg(process.pid, signal.SIGSTOP)
                spent = cpu_seconds(process.pid) - cpu  # includes the bench's warm-up requests
                cpu_ms = spent * 1000 / max(1, r.items + cfg.warmup_requests * cfg.batch)
                row = {"items_per_s": r.items_per_s, "errors": r.errors, "cpu_ms": cpu_ms}
                row.update(r.latency_ms)
                results.setdefault(label, []).append(row)
                print(
                    f"round {round_ + 1} {label:>10}: {row['items_per_s']:8.1f} items/s  "
                    f"p50 {row['p50']:7.1f} ms  p99 {row['p99']:7.1f} ms  "
                    f"server CPU {cpu_ms:.3f} ms/item  errors {r.errors}",
                    flush=True,
                )
    finally:
        for process, _ in running.values():
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
    load = (
        f"{args.modality} x{args.batch} c={args.concurrency} {args.encoding}, "
        f"{args.rounds} rounds of {args.duration:g} s, {os.cpu_count()} CPUs"
    )
    print(
        f"\n{load}\n| server | items/s (median) | p50 ms | p99 ms | server CPU ms per item "
        "| items/s per round |"
    )
    print("|---|---|---|---|---|---|")
    first = statistics.median(r["items_per_s"] for r in next(iter(results.values())))
    for label, rows in results.items():
        ips = statistics.median(r["items_per_s"] for r in rows)
        p50 = statistics.median(r["p50"] for r in rows)
        p99 = statistics.median(r["p99"] for r in rows)
        cpu = statistics.median(r["cpu_ms"] for r in rows)
        rounds = ", ".join(f"{r['items_per_s']:.0f}" for r in rows)
        print(
            f"| {label} | {ips:.1f} ({ips / first:.2f}x) | {p50:.1f} | {p99:.1f} | {cpu:.3f} "
            f"| {rounds} |"
        )


if __name__ == "__main__":
    main()
