"""Every setting is an env var and a `clipserve serve` flag; flags win over env."""

from __future__ import annotations

import pytest

from service.cli import build_parser, settings_from_args
from service.config import Settings


def parse(*argv: str) -> Settings:
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


def test_defaults_serve_the_bundled_models_on_8000(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("CLIPSERVE_"):
            monkeypatch.delenv(key)
    settings = parse()
    assert settings.port == 8000
    assert (settings.models_dir / "mnist-clip" / "clipserve.json").is_file()


def test_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSERVE_PORT", "9001")
    monkeypatch.setenv("CLIPSERVE_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("CLIPSERVE_WARMUP", "false")
    settings = parse()
    assert settings.port == 9001 and settings.warmup is False
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    settings = parse("--port", "9002", "--providers", "CPUExecutionProvider", "--warmup")
    assert settings.port == 9002 and settings.providers == ["CPUExecutionProvider"]
    assert settings.warmup is True


def test_every_setting_has_a_flag() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in help_text
        assert "CLIPSERVE_" + name.upper() in help_text


def test_serve_help_shows_every_default() -> None:
    """`clipserve serve --help`, as a user runs it, names each setting's default."""
    import subprocess
    import sys

    from tests.server import REPO

    out = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    flat = " ".join(out.split())
    for expected in (
        "(default: 8000) [env CLIPSERVE_PORT]",
        "(default: 10.0) [env CLIPSERVE_MAX_DECODE_S]",
        "(default: CPUExecutionProvider) [env CLIPSERVE_PROVIDERS]",
        "(default: false) [env CLIPSERVE_ALLOW_IMAGE_URLS]",
        "(default: none) [env CLIPSERVE_QDRANT_URL]",
    ):
        assert expected in flat, expected
    assert flat.count("(default: ") >= len(Settings.model_fields)
