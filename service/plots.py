"""PNG pictures of `clipserve eval --report` and `clipserve bench --plot`, drawn with matplotlib
(the `plots` extra: never in the serving image).

Figures are built with `matplotlib.figure.Figure`, not pyplot: no global state and no GUI
backend, so drawing works the same on a headless server and inside a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from PIL import Image

DPI = 100
STRIP_ROWS = 20  # text queries drawn in a retrieval strip (the JSON lists them all)
_RIGHT, _WRONG = "#2a9d3f", "#d62728"


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def confusion_matrix(classes: Sequence[str], counts: np.ndarray, path: Path) -> Path:
    """Rows: true class; columns: the top-1 answer; cells: the share of the row (and count)."""
    n = len(classes)
    side = min(max(4.0, 0.55 * n + 2), 30.0)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.add_subplot()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="share of the true class")
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=60, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), classes)
    if n <= 20:
        for (row, col), count in np.ndenumerate(counts):
            if count:
                colour = "white" if shares[row, col] > 0.5 else "black"
                ax.text(col, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xlabel("top-1 answer")
    ax.set_ylabel("true class")
    ax.set_title(f"zero-shot confusion ({int(counts.sum())} images)")
    return _save(fig, path)


def per_class_accuracy(accuracy: dict[str, float], path: Path) -> Path:
    names = list(accuracy)
    values = [accuracy[n] for n in names]
    fig = Figure(figsize=(7, max(2.5, 0.3 * len(names) + 1)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(range(len(names)), values, color="#4c72b0")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(1 / max(len(names), 1), color="grey", linestyle=":", label="chance")
    for i, v in enumerate(values):
        ax.text(min(v + 0.01, 0.9), i, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("zero-shot top-1 accuracy")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _thumbnail(file: Path, side: int = 96) -> np.ndarray:
    with Image.open(file) as img:
        rgb = img.convert("RGB")
        rgb.thumbnail((side, side))
        return np.asarray(rgb)


def retrieval_strip(
    queries: Sequence[str],
    relevant: Sequence[Sequence[bool]],
    images: Sequence[Sequence[Path]],
    path: Path,
    title: str,
) -> Path:
    """One row per text query: the query, then its top images, framed green when of the query's
    class and red when not."""
    rows = len(queries)
    cols = max((len(r) for r in images), default=1)
    fig = Figure(figsize=(3.2 + 1.2 * cols, 0.4 + 1.2 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[2.6] + [1] * cols)
    for r, query in enumerate(queries):
        label = fig.add_subplot(grid[r, 0])
        label.axis("off")
        label.text(1, 0.5, query, ha="right", va="center", fontsize=9, wrap=True)
        for c, (file, hit) in enumerate(zip(images[r], relevant[r], strict=True)):
            ax = fig.add_subplot(grid[r, c + 1])
            ax.imshow(_thumbnail(file), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(_RIGHT if hit else _WRONG)
                spine.set_linewidth(3)
            if r == 0:
                ax.set_title(f"#{c + 1}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _series(label: str, results: Sequence[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """A results file's runs grouped by what they measured (all but the concurrency), each group
    sorted by concurrency; several groups in one file get their settings in the label."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for r in results:
        c = r["config"]
        key = (c["modality"], c["transport"], c["batch"], c.get("path"), c.get("model"))
        groups.setdefault(key, []).append(r)
    out = []
    for (modality, transport, batch, _, _), runs in groups.items():
        name = label if len(groups) == 1 else f"{label} {modality} {transport} b={batch}"
        out.append((name, sorted(runs, key=lambda r: r["config"]["concurrency"])))
    return out


def bench_plot(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path) -> Path:
    """Throughput, and p50 (solid) / p99 (dashed) latency, against concurrency: one line per
    series, so several result files (runs, peers, settings) compare on one picture.
    `runs`: (label, results as `clipserve bench --out` writes them)."""
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    rate, latency = fig.subplots(1, 2)
    machines: set[str] = set()
    levels: set[int] = set()
    lines = [s for label, results in runs for s in _series(label, results)]
    for k, (name, series) in enumerate(lines):
        colour = f"C{k % 10}"
        x = [r["config"]["concurrency"] for r in series]
        p50 = [r["latency_ms"].get("p50", np.nan) for r in series]
        p99 = [r["latency_ms"].get("p99", np.nan) for r in series]
        rate.plot(x, [r["items_per_s"] for r in series], "o-", color=colour, label=name)
        latency.plot(x, p50, "o-", color=colour, label=name)
        latency.plot(x, p99, "s--", color=colour)
        levels |= set(x)
        machines |= {
            f"{r['machine'].get('cpu')}, {r['machine'].get('cores')} cores"
            for r in series
            if r.get("machine")
        }
    for ax in (rate, latency):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(levels), [str(c) for c in sorted(levels)])
        ax.minorticks_off()
        ax.set_xlabel("concurrency (requests in flight)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    rate.set_ylabel("items / s")
    rate.set_ylim(bottom=0)
    rate.set_title("throughput")
    latency.set_yscale("log")
    latency.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    latency.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    latency.yaxis.set_minor_formatter(NullFormatter())
    latency.set_ylabel("latency per request (ms)")
    latency.set_title("latency: p50 (solid), p99 (dashed)")
    if machines:
        fig.suptitle("; ".join(sorted(machines)), fontsize=9)
    return _save(fig, path)
