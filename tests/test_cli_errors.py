"""Every CLI failure a user can cause ends in one line naming the cause and the fix, with a
non-zero exit code; the traceback only with `--debug`. Real commands in real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.server import REPO, free_port, run_server
from training.mnist import write_image_folder


def clipserve(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The whole of stderr is one `clipserve: error:` line that contains `words`."""
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("clipserve: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def last_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """A server logs as it starts; the failure is its last line, and no traceback."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("clipserve: error: "), result.stderr
    for word in words:
        assert word in line, (word, line)
    return line


def nobody() -> str:
    """A local URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def test_index_on_a_missing_folder(tmp_path: Path) -> None:
    result = clipserve("index", str(tmp_path / "nope"), "--collection", "c", "--url", nobody())
    one_line(result, "does not exist", str(tmp_path / "nope"))


def test_index_on_a_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    result = clipserve("index", str(tmp_path), "--collection", "c", "--url", nobody())
    one_line(result, "no image files", ".png")


def test_index_and_eval_with_no_server(tmp_path: Path) -> None:
    write_image_folder(tmp_path, 20)
    url = nobody()
    one_line(clipserve("index", str(tmp_path), "--collection", "c", "--url", url), url, "serve")
    one_line(clipserve("eval", str(tmp_path), "--url", url), url, "clipserve serve", "--url")


def test_eval_on_a_folder_without_class_folders(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "tree", 20)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, png in enumerate(sorted((tmp_path / "tree").rglob("*.png"))):
        png.rename(flat / f"{i}.png")
    one_line(clipserve("eval", str(flat), "--url", nobody()), "one sub-folder per class")
    single = tmp_path / "single" / "seven"
    single.mkdir(parents=True)
    (flat / "0.png").rename(single / "0.png")
    one_line(clipserve("eval", str(single.parent), "--url", nobody()), "two or more")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    for argv in (["--debug", "index"], ["index", "--debug"]):
        result = clipserve(*argv, str(tmp_path / "nope"), "--collection", "c")
        assert result.returncode != 0 and "Traceback" in result.stderr, result.stderr


def test_a_bad_setting_names_flag_variable_and_value() -> None:
    one_line(clipserve("serve", "--port", "99999"), "--port", "CLIPSERVE_PORT", "99999")
    bad_env = clipserve("serve", env={"CLIPSERVE_MAX_ITEMS": "many"})
    one_line(bad_env, "CLIPSERVE_MAX_ITEMS", "'many'")


def test_bench_with_no_server() -> None:
    url = nobody()
    result = clipserve("bench", "--url", url, "--duration", "1", "--concurrency", "1")
    one_line(result, url, "clipserve serve")
    usage = clipserve("bench", "--image-size", "600by400")  # argparse: usage, then the error
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert "is not WIDTHxHEIGHT" in usage.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_second_server_on_a_data_dir_in_use(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with run_server(tmp_path, "--data-dir", str(data)) as first:
        second = clipserve("serve", "--port", str(free_port()), "--data-dir", str(data))
        last_line(second, "in use by another process", str(data))
        port = first.url.rsplit(":", 1)[1]  # and on the port in use, before loading models
        started = time.monotonic()
        busy = clipserve("serve", "--port", port, "--data-dir", str(tmp_path / "other"))
        assert time.monotonic() - started < 30
        one_line(busy, f"127.0.0.1:{port}", "--port")


@pytest.mark.slow
@pytest.mark.export
def test_export_from_the_hub_offline_is_one_line_at_once(tmp_path: Path) -> None:
    """Offline, huggingface_hub would retry for about two minutes; a closed local port stands
    in for the unreachable hub, and an empty HF_HOME for a machine that never downloaded it."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        hub = f"http://127.0.0.1:{closed.getsockname()[1]}"
        env = {"HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
        started = time.monotonic()
        result = clipserve(
            "export",
            "--source",
            "open_clip:ViT-B-32:laion2b_s34b_b79k",
            "--out",
            str(tmp_path / "out"),
            env=env,
            timeout=300,
        )
    elapsed = time.monotonic() - started
    one_line(result, "not in the local cache", "offline", "open_clip:ViT-B-32:/path/to")
    assert elapsed < 60, elapsed  # torch and open_clip imports included
    assert not (tmp_path / "out").exists()
