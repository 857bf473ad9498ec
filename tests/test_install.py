"""Both install kinds serve the bundled default model: `pip install .` (a wheel: the model
repository travels inside the package) and `pip install -e .` (read in place).

Each goes into a fresh virtual environment with `--no-deps --no-build-isolation --no-index`,
its dependencies reached through a `.pth` file pointing at this interpreter's site-packages
(nothing is downloaded), from a copy of the project, then `clipserve serve` runs from another
folder with nothing but that environment: no PYTHONPATH, no source tree on its path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.server import REPO, free_port, wait_ready

PROJECT_FILES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "service", "models"]


def _project_copy(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".trt")
    for name in PROJECT_FILES:
        path = REPO / name
        if not path.exists():
            continue
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    return src


def _venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # after the environment's own site-packages: the installed clipserve wins over any other
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIPSERVE_", "PYTHON"))}
    return {**env, "PYTHONUNBUFFERED": "1"}


def _serves_the_bundled_model(python: Path, cwd: Path) -> Path:
    """Start `clipserve serve` from `cwd`; it must find and serve the default model."""
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import service.config as c; print(c.__file__, c.Settings().models_dir)",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_clean_env(),
    )
    assert where.returncode == 0, where.stderr
    package, models = (Path(p) for p in where.stdout.split())
    port = free_port()
    log = cwd / f"serve-{port}.log"
    cmd = [str(python), "-m", "service", "serve", "--port", str(port), "--store-engine", "none"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd, env=_clean_env()
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        names = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
        assert names, names
        answer = httpx.post(f"{url}/v1/embeddings", json={"input": ["seven"]}, timeout=30)
        assert answer.status_code == 200, answer.text
        for page in ("", "playground.js", "playground.css"):  # package data, in wheels too
            assert httpx.get(f"{url}/ui/{page}").status_code == 200, page
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert REPO not in package.parents, package  # not this source tree
    return models


@pytest.mark.slow
def test_a_wheel_install_carries_the_default_model(tmp_path: Path) -> None:
    src = _project_copy(tmp_path)
    python = _venv(tmp_path / "venv")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, *offline, str(src)], check=True, cwd=tmp_path)
    shutil.rmtree(src)  # nothing may still point into the source
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    models = _serves_the_bundled_model(python, elsewhere)
    assert "site-packages" in models.parts and (models / "mnist-clip" / "clipserve.json").is_file()


@pytest.mark.slow
def test_an_editable_install_reads_models_in_place(tmp_path: Path) -> None:
    src = _project_copy(tmp_path)
    python = _venv(tmp_path / "venv")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, *offline, "-e", str(src)], check=True, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _serves_the_bundled_model(python, elsewhere) == src / "models"
