"""Paths to the deploy validators in .tools/ and a subprocess helper.

The tools are installed by `.ci/install-deploy-tools.sh` (CI runs it before pytest). A missing
tool fails the test that needs it, never skips it: a green run must mean "validated".
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "clipserve"
INSTALL_HINT = "run `bash .ci/install-deploy-tools.sh` (CI does, before pytest)"


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not (path.exists() and os.access(path, os.X_OK)):
        pytest.fail(f"deploy tool {name!r} is missing at {path}: {INSTALL_HINT}", pytrace=False)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment, so that a developer's CLIPSERVE_* / COMPOSE_* / DOCKER_* variables
    cannot change what is validated."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    env.update(extra)
    return env


def run(
    cmd: list[str | Path],
    *,
    cwd: Path = REPO,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        input=input,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
