"""The CPU image, built once per test session from this checkout, and the times it took."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.image import engine
from tests.server import REPO

# What the image test measured (seconds), printed at the end of the run.
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tag of the `cpu` target built from this checkout on the Debian base, with the pinned
    dependency versions (deploy/constraints/cpu.txt)."""
    engine.require_tools()
    base, TIMINGS["base image (0: cached)"] = engine.base_image()
    tag = f"localhost/clipserve:test-{os.getpid()}"
    log = tmp_path_factory.mktemp("image") / "build.log"
    TIMINGS["build --target cpu"] = engine.build(
        REPO, tag, "cpu", log, f"BASE_IMAGE={base}", "PIP_CONSTRAINT=deploy/constraints/cpu.txt"
    )
    yield tag
    engine.remove_image(tag)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("image test timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what}: {seconds:.1f} s")
