"""`clipserve index` (resumable bulk indexing) and `clipserve eval` against a running server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from service.manifest import load_manifest
from tests.server import REPO, Server
from training.mnist import HELD_OUT, write_image_folder


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_index_is_resumable_with_payloads(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "digits"
    write_image_folder(root, 60)
    first = next(iter(sorted((root / "seven").iterdir())))
    first.with_name(first.name + ".json").write_text(json.dumps({"source": "mnist", "seven": True}))
    (root / "seven" / "broken.png").write_bytes(b"not a png")
    out = cli("index", str(root), "--collection", "folder", "--url", server.url, "--batch", "16")
    assert "61 images: 60 indexed, 0 already there, 1 failed" in out
    again = cli("index", str(root), "--collection", "folder", "--url", server.url)
    assert "0 indexed, 60 already there" in again
    assert httpx.get(f"{server.url}/v1/collections/folder").json()["count"] == 60
    hits = httpx.post(
        f"{server.url}/v1/collections/folder/search",
        json={
            "query": {"text": "x"},
            "filter": {"must": [{"key": "seven", "match": {"value": True}}]},
        },
    ).json()["results"]
    assert len(hits) == 1
    payload = hits[0]["payload"]
    assert payload["folder"] == "seven" and payload["path"] == f"seven/{first.name}"
    assert payload["source"] == "mnist" and len(payload["sha256"]) == 64


def test_eval_measures_what_the_model_card_measures(
    server: Server, tmp_path: Path, model_dir: Path
) -> None:
    """On the card's own held-out images, `clipserve eval` prints the card's numbers: the same
    zero-shot prompts and the same text->image queries (class x template) and metrics."""
    card = load_manifest(model_dir).card
    root = tmp_path / "eval"
    write_image_folder(root, HELD_OUT)
    out = cli("eval", str(root), "--url", server.url)
    assert f"{HELD_OUT} images, 10 classes" in out
    top1 = float(re.search(r"zero-shot top-1 (\S+)", out).group(1))  # type: ignore[union-attr]
    assert abs(top1 - card["zero_shot"]["top1"]) <= 0.005, (out, card["zero_shot"])
    t2i = card["text_to_image"]
    assert f"({t2i['queries']} queries: class x template)" in out, (out, t2i)
    measured = {f"precision_at_{k}": float(v) for k, v in re.findall(r"precision@(\d+) (\S+)", out)}
    measured["mean_average_precision"] = float(re.search(r"mAP (\S+)", out).group(1))  # type: ignore[union-attr]
    for key, value in measured.items():
        assert abs(value - t2i[key]) <= 0.01, (key, out, t2i)  # the uint8 tower: tiny changes


def test_eval_with_more_queries_than_a_request_may_hold(server: Server, tmp_path: Path) -> None:
    """25 classes x 3 templates = 75 text queries, over the test server's `--max-items 64`:
    eval sends them in batches, as it does the images (not one request refused with 413)."""
    digits = tmp_path / "digits"
    write_image_folder(digits, 50)
    root = tmp_path / "many"
    for k, png in enumerate(sorted(digits.rglob("*.png"))[:50]):
        folder = root / f"class{k % 25}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / png.name).write_bytes(png.read_bytes())
    out = cli("eval", str(root), "--url", server.url)
    assert "50 images, 25 classes" in out and "(75 queries: class x template)" in out, out
