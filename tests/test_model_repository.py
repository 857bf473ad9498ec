"""A broken or incomplete model folder stops start-up with a message naming the file and problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from service.manifest import ModelFolderError, load_manifest
from tests.server import REPO


def serve_error(models_dir: Path, *extra: str) -> str:
    """Run `clipserve serve` on a folder that must not load; return what it printed."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--models-dir",
            str(models_dir),
            "--port",
            "0",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def _manifest(d: Path) -> dict[str, object]:
    return json.loads((d / "clipserve.json").read_text())  # type: ignore[no-any-return]


def _write(d: Path, m: dict[str, object]) -> None:
    (d / "clipserve.json").write_text(json.dumps(m))


def _no_manifest(d: Path) -> None:
    (d / "clipserve.json").unlink()


def _bad_json(d: Path) -> None:
    (d / "clipserve.json").write_text("{not json")


def _missing_field(d: Path) -> None:
    m = _manifest(d)
    del m["embedding_dim"]
    _write(d, m)


def _bad_family(d: Path) -> None:
    m = _manifest(d)
    m["family"] = "vae"
    _write(d, m)


def _no_onnx(d: Path) -> None:
    (d / "image" / "1" / "model.onnx").unlink()


def _corrupt_onnx(d: Path) -> None:
    (d / "text" / "1" / "model.onnx").write_bytes(b"this is not onnx")


def _no_tokenizer(d: Path) -> None:
    (d / "tokenizer.json").unlink()


def _bad_tokenizer(d: Path) -> None:
    (d / "tokenizer.json").write_text("{}")


def _wrong_dim(d: Path) -> None:
    m = _manifest(d)
    m["embedding_dim"] = 7
    _write(d, m)


def _wrong_input_name(d: Path) -> None:
    m = _manifest(d)
    m["towers"]["image"]["uint8_variant"]["inputs"][0]["name"] = "pixel_values"  # type: ignore[index]
    _write(d, m)


def _no_uint8_onnx(d: Path) -> None:
    (d / "image_uint8" / "1" / "model.onnx").unlink()


def _float_variant(d: Path) -> None:
    m = _manifest(d)
    m["towers"]["image"]["uint8_variant"]["inputs"][0]["dtype"] = "float32"  # type: ignore[index]
    _write(d, m)


CASES: list[tuple[str, Callable[[Path], None], str, str]] = [
    ("no manifest", _no_manifest, "clipserve.json", "missing manifest"),
    ("bad json", _bad_json, "clipserve.json", "not valid JSON"),
    ("missing field", _missing_field, "clipserve.json", "embedding_dim"),
    ("bad family", _bad_family, "clipserve.json", "family"),
    ("no onnx", _no_onnx, "image/1/model.onnx", "missing ONNX file"),
    ("corrupt onnx", _corrupt_onnx, "text/1/model.onnx", "cannot load"),
    ("no tokenizer", _no_tokenizer, "tokenizer.json", "missing tokenizer"),
    ("bad tokenizer", _bad_tokenizer, "tokenizer.json", "bad tokenizer"),
    ("wrong dimension", _wrong_dim, "clipserve.json", "dimension 7"),
    ("wrong input name", _wrong_input_name, "image_uint8/1/model.onnx", "differ from the manifest"),
    ("no uint8 onnx", _no_uint8_onnx, "image_uint8/1/model.onnx", "missing ONNX file"),
    ("float variant", _float_variant, "clipserve.json", "one uint8 input"),
]


@pytest.mark.parametrize(
    ("breaks", "file", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_broken_model_folder_fails_at_start(
    tmp_path: Path, model_dir: Path, breaks: Callable[[Path], None], file: str, problem: str
) -> None:
    broken = tmp_path / "models" / "broken"
    shutil.copytree(model_dir, broken)
    breaks(broken)
    message = serve_error(tmp_path / "models", "--models", "broken")
    assert f"broken/{file}" in message and problem in message, message


def test_empty_or_missing_models_dir(tmp_path: Path) -> None:
    assert "no model folders" in serve_error(tmp_path)
    assert "does not exist" in serve_error(tmp_path / "nowhere")


def test_unknown_named_model_and_missing_provider(tmp_path: Path, model_dir: Path) -> None:
    assert "missing manifest" in serve_error(model_dir.parent, "--models", "nope")
    message = serve_error(model_dir.parent, "--providers", "CUDAExecutionProvider")
    assert "CUDAExecutionProvider" in message and "not available" in message


def test_shipped_manifest_is_valid(model_dir: Path) -> None:
    manifest = load_manifest(model_dir)
    assert set(manifest.towers) == {"image", "text"}
    assert (model_dir / "image" / "config.pbtxt").is_file()
    assert (model_dir / "text" / "config.pbtxt").is_file()
    with pytest.raises(ModelFolderError):
        load_manifest(model_dir / "nope")
