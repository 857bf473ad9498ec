"""`clipserve eval --report` and `clipserve bench --plot` against a live server: real commands in
real processes, and the PNGs they write checked as pictures (size, pixels that are not blank,
the colours that carry the meaning)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.server import REPO, Server
from training.mnist import write_image_folder

GREEN, RED = (0x2A, 0x9D, 0x3F), (0xD6, 0x27, 0x28)  # retrieval frames (service.plots)
SERIES = [(0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)]  # matplotlib's first two line colours


def clipserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def picture(path: Path, min_size: tuple[int, int] = (300, 200)) -> np.ndarray:
    """The PNG as RGB pixels, checked to be a real picture: big enough, mostly not blank."""
    assert path.is_file() and path.stat().st_size > 5_000, path
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= min_size[0] and img.height >= min_size[1], img.size
        rgb = np.asarray(img.convert("RGB")).astype(int)
    ink = np.any(rgb < 230, axis=2).mean()  # share of pixels that are not white
    assert ink > 0.02, (path, ink)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50, path  # not a flat fill
    return rgb


def pixels_of(rgb: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    return int(np.all(np.abs(rgb - np.asarray(colour)) <= tolerance, axis=2).sum())


def keep(path: Path) -> None:
    """Test artifacts: copied to $CLIPSERVE_TEST_ARTIFACTS when it is set."""
    folder = os.environ.get("CLIPSERVE_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


@pytest.mark.slow
def test_eval_report_writes_json_and_pictures(server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "imagefolder"
    write_image_folder(folder, 120)
    out = tmp_path / "report"
    result = clipserve("eval", str(folder), "--url", server.url, "--report", str(out))
    assert result.returncode == 0, result.stderr
    assert "zero-shot top-1" in result.stdout
    for name in ("eval.json", "confusion.png", "per_class.png", "retrieval.png"):
        assert f"report: {out / name}" in result.stdout

    report = json.loads((out / "eval.json").read_text())
    counts = np.asarray(report["confusion"]["counts"])
    classes = report["classes"]
    assert counts.shape == (len(classes), len(classes)) and counts.sum() == report["images"] == 120
    # the matrix and the per-class numbers say what the printed summary says
    assert abs(np.trace(counts) / counts.sum() - report["zero_shot"]["top1"]) < 1e-3
    for c, name in enumerate(classes):
        assert abs(report["per_class_accuracy"][name] - counts[c, c] / counts[c].sum()) < 1e-3
    templates = report["text_to_image"]["queries"] // len(classes)
    assert len(report["retrieval"]) == len(classes) * templates
    for query in report["retrieval"]:
        assert len(query["top"]) == 5
        assert all((folder / f).is_file() for f in query["top"])
    # the strip's frames say whether each retrieved image is of the query's class
    first = report["retrieval"][::templates]  # the strip's rows: each class's first template
    right = sum(Path(f).parts[0] == q["class"] for q in first for f in q["top"])

    confusion = picture(out / "confusion.png")
    assert pixels_of(confusion, (8, 48, 107), 40) > 100  # the dark blue of a strong diagonal
    picture(out / "per_class.png")
    strip = picture(out / "retrieval.png", (600, 10 * 100))
    assert (pixels_of(strip, GREEN) > 0) == (right > 0)
    assert (pixels_of(strip, RED) > 0) == (right < 5 * len(first))
    for name in ("confusion.png", "per_class.png", "retrieval.png"):
        keep(out / name)


@pytest.mark.slow
def test_bench_plot_draws_runs_and_compares_files(server: Server, tmp_path: Path) -> None:
    load = ["--url", server.url, "--concurrency", "1", "4", "--requests", "40"]
    one, two = tmp_path / "first.json", tmp_path / "second.json"
    single = tmp_path / "single.png"
    result = clipserve("bench", *load, "--out", str(one), "--plot", str(single))
    assert result.returncode == 0, result.stderr
    assert f"plot: {single}" in result.stdout
    result = clipserve(
        "bench", *load, "--modality", "image", "--image-size", "64x64", "--out", str(two)
    )
    assert result.returncode == 0, result.stderr

    compared = tmp_path / "compared.png"
    # drawing needs no server: the results files only
    result = clipserve("bench", "--results", str(one), str(two), "--plot", str(compared))
    assert result.returncode == 0, result.stderr

    alone, both = picture(single), picture(compared)
    assert pixels_of(alone, SERIES[0]) > 200 and pixels_of(alone, SERIES[1]) == 0
    assert pixels_of(both, SERIES[0]) > 200 and pixels_of(both, SERIES[1]) > 200
    keep(compared)


def test_bench_plot_refuses_what_it_cannot_draw(tmp_path: Path) -> None:
    no_plot = clipserve("bench", "--results", str(tmp_path / "a.json"))
    assert no_plot.returncode == 2 and "give --plot FILE" in no_plot.stderr
    missing = clipserve("bench", "--results", str(tmp_path / "a.json"), "--plot", "x.png")
    assert missing.returncode == 2 and "cannot read bench results" in missing.stderr
    (tmp_path / "other.json").write_text('[{"what": "not bench results"}]')
    wrong = clipserve("bench", "--results", str(tmp_path / "other.json"), "--plot", "x.png")
    assert wrong.returncode == 2 and "not the results of `clipserve bench --out`" in wrong.stderr
    for result in (no_plot, missing, wrong):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_pictures_without_matplotlib_name_the_extra(tmp_path: Path) -> None:
    """A serving-only install has no matplotlib: one line naming the extra, before any work."""
    blocker = tmp_path / "sitecustomize.py"  # makes `import matplotlib` fail in the child
    blocker.write_text("import sys\nsys.modules['matplotlib'] = None\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    for args in (
        ("eval", str(tmp_path), "--url", "http://127.0.0.1:9", "--report", str(tmp_path / "r")),
        ("bench", "--url", "http://127.0.0.1:9", "--plot", str(tmp_path / "b.png")),
    ):
        result = clipserve(*args, env=env)
        assert result.returncode == 2, result.stderr
        assert "pip install 'clipserve[plots]'" in result.stderr, result.stderr


def test_the_readme_shows_pictures_that_exist() -> None:
    """The README shows one picture of each command (and the playground): committed PNGs."""
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (REPO / "README.md").read_text())
    assert {"docs/eval-retrieval.png", "docs/bench-plot.png"} <= set(links), links
    for link in links:
        picture(REPO / link)
