"""Every example of README.md and docs/, run as written against a live server on the default
settings, so that the documents cannot drift from the code. The examples are found in the text
(tests/docs_examples.py says how, and how a document marks a block that cannot run here)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.docs_examples import Example, all_examples, documents, examples
from tests.server import REPO, Server, run_server
from training.mnist import write_image_folder
from training.samples import write_samples

EXAMPLES = all_examples()

# A block runs with bash in strict mode; curl fails on HTTP errors (printing the error body).
PRELUDE = """set -euo pipefail
curl() { command curl --fail-with-body --silent --show-error "$@"; }
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`clipserve serve` as a new user runs it: the default model, default settings."""
    with run_server(tmp_path_factory.mktemp("docs-server")) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, training_data: Path) -> Path:
    """The files the examples name, made of real digits, the README's sample pictures, and
    `clipserve` / `python` that run this checkout with this interpreter."""
    root = tmp_path_factory.mktemp("docs-work")
    write_samples(root / "samples")
    write_image_folder(root / "imagefolder", 100)
    digits = sorted((root / "imagefolder").rglob("*.png"))
    (root / "photos").mkdir()
    for png in digits[:12]:
        (root / "photos" / png.name).write_bytes(png.read_bytes())
    (root / "digit.png").write_bytes(digits[0].read_bytes())
    (root / "b.png").write_bytes(digits[1].read_bytes())
    Image.open(digits[2]).convert("RGB").save(root / "a.jpg", "JPEG")
    shims = root / ".bin"
    shims.mkdir()
    for name, argv in (("clipserve", "-m service"), ("python", ""), ("python3", "")):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {argv} "$@"\n')
        shim.chmod(0o755)
    return root


def _filled(code: str, server: Server, workdir: Path) -> str:
    """The documented placeholders, filled in."""
    address = server.url.removeprefix("http://")
    code = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", address, code)
    png = base64.b64encode((workdir / "digit.png").read_bytes()).decode()
    code = code.replace("data:image/png;base64,...", f"data:image/png;base64,{png}")
    return re.sub(r"--duration \d+(\.\d+)?", "--duration 1", code)


def _run(example: Example, server: Server, workdir: Path) -> subprocess.CompletedProcess[str]:
    code = _filled(example.code, server, workdir)
    env = {
        **os.environ,
        "PATH": f"{workdir / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "CLIPSERVE_URL": server.url,  # client commands (index, eval, bench)
        "CLIPSERVE_PORT": server.url.rsplit(":", 1)[1],  # a `clipserve serve` meets this one
        "CLIPSERVE_DATA_DIR": str(workdir / "data"),
    }
    argv = (
        [sys.executable, "-c", code] if example.lang == "python" else ["bash", "-c", PRELUDE + code]
    )
    process = subprocess.Popen(
        argv,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its background jobs are ended with it
    )
    try:
        out, err = process.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs_as_written(example: Example, live: Server, workdir: Path) -> None:
    if example.not_here is not None:
        if example.lang == "shell":  # still a valid script
            syntax = subprocess.run(["bash", "-n", "-c", example.code], capture_output=True)
            assert syntax.returncode == 0, syntax.stderr.decode()
        pytest.skip(f"{example.name} not run here: {example.not_here}")
    result = _run(example, live, workdir)
    assert result.returncode == 0, (
        f"{example.name} failed ({result.returncode}):\n{example.code}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


def test_the_walk_finds_the_examples() -> None:
    """A guard on the parser: the README's examples are found and most of them run."""
    assert REPO / "README.md" in documents() and REPO / "docs" / "triton.md" in documents()
    readme = examples(REPO / "README.md")
    runnable = [e for e in readme if e.not_here is None]
    assert len(runnable) >= 5 and any(e.lang == "python" for e in runnable), readme
    commands = "\n".join(e.code for e in runnable)
    for used in ("curl", "clipserve index", "clipserve eval", "clipserve bench", "label-sets"):
        assert used in commands, used
    assert all(e.not_here for e in readme if "pip install" in e.code or "make test" in e.code)
