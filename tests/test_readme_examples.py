"""The README's "Use it" examples on the default model, run as written: sample pictures from
`python -m training.samples`, `clipserve index` into a collection, then the README's searches
and zero-shot classifications over real HTTP, with the answers the README shows."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import REPO, Server, run_server
from training.samples import write_samples
from training.train_default import NAME

README = (REPO / "README.md").read_text()
# (query text, filter on the folder or None, the file the README says comes first)
SEARCHES = [
    ("a cat", None, "cat.png"),
    ("a red heart", "emoji", "red-heart.png"),
    ("two blue stars", "shapes", "two-blue-stars.png"),
    ("a green triangle", "shapes", "a-green-triangle.png"),
]
# (image file, labels, the label the README says wins)
CLASSIFY = [
    ("emoji/cat.png", ["cat", "dog", "car"], "cat"),
    ("emoji/automobile.png", ["cat", "dog", "car"], "car"),
    (
        "shapes/three-blue-stars.png",
        ["one blue star", "two blue stars", "three blue stars"],
        "three blue stars",
    ),
]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory, training_data: Path) -> Path:
    root = tmp_path_factory.mktemp("samples")
    write_samples(root)
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[Server]:
    """`clipserve serve` with no model settings, and the samples indexed as the README says."""
    with run_server(tmp_path_factory.mktemp("readme")) as server:
        command = [sys.executable, "-m", "service", "index", str(samples)]
        command += ["--collection", "things", "--url", server.url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "40 indexed" in done.stdout, done.stdout
        yield server


def _post(server: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_the_default_model_is_served(served: Server) -> None:
    models = httpx.get(f"{served.url}/v1/models").json()
    assert any(m["id"] == NAME for m in models["data"])
    r = _post(served, "/v1/embeddings", {"input": ["a red heart"]})
    assert r["model"] == NAME


@pytest.mark.parametrize(("text", "folder", "first"), SEARCHES)
def test_readme_search(served: Server, text: str, folder: str | None, first: str) -> None:
    assert f'"{text}"' in README and first in README
    body: dict[str, Any] = {"query": {"text": text}, "limit": 3}
    if folder:
        body["filter"] = {"must": [{"key": "folder", "match": {"value": folder}}]}
        assert json.dumps(body["filter"]) in README
    hits = _post(served, "/v1/collections/things/search", body)["results"]
    assert hits[0]["payload"]["filename"] == first, [h["payload"]["filename"] for h in hits]
    if folder:
        assert all(h["payload"]["folder"] == folder for h in hits)


@pytest.mark.parametrize(("image", "labels", "winner"), CLASSIFY)
def test_readme_classify(
    samples: Path, served: Server, image: str, labels: list[str], winner: str
) -> None:
    assert image in README and winner in README
    picture = base64.b64encode((samples / image).read_bytes()).decode()
    r = _post(served, "/v1/classify", {"images": [picture], "labels": labels})
    ranked = r["results"][0]
    assert ranked[0]["label"] == winner, ranked
    assert ranked[0]["score"] > 1 / len(labels) + 0.1  # not the flat 1/n of unknown words
