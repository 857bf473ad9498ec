"""Start the real service (`python -m service serve`) on a free port, for tests through HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 60,
    probe: str = "readyz",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/{probe}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()}")


@contextmanager
def run_server(
    tmp: Path, *args: str, env: dict[str, str] | None = None, ready: bool = True
) -> Iterator[Server]:
    """The server, once ready (`ready=False`: once it answers at all, e.g. while a damaged
    store keeps it not ready)."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "service", "serve", "--port", str(port), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if "--data-dir" not in args:
        full_env.setdefault("CLIPSERVE_DATA_DIR", str(tmp / f"data-{port}"))
    with log.open("wb") as sink:
        process = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env=full_env, cwd=REPO
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log, probe="readyz" if ready else "healthz")
        yield Server(url, process, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@dataclass
class HealthWatch:
    """`/healthz` polled from a thread while something hostile runs: the slowest answer."""

    url: str
    slowest_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = client.get(f"{self.url}/healthz").status_code
                    if status != 200:
                        self.failures.append(f"HTTP {status}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                self._stop.wait(0.05)


@contextmanager
def watch_health(url: str) -> Iterator[HealthWatch]:
    watch = HealthWatch(url)
    thread = threading.Thread(target=watch._run, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        watch._stop.set()
        thread.join()
