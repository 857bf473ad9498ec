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
