"""Watching a running server from a test: its processes (the store process among them), their
memory, and whether `/healthz` keeps answering quickly while something hostile runs."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def store_process(server_pid: int, timeout_s: float = 30) -> int:
    """The pid of the server's store process (waits while it is being restarted)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [p for p in children(server_pid) if "service.store.process" in cmdline(p)]
        if found and alive(found[0]):
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"server {server_pid} has no store process")


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the server and its store process)."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += sum(int(s.split()[1]) for s in status.splitlines() if s.startswith("VmRSS:"))
    return total / 1024


@dataclass
class Watch:
    """The slowest `/healthz` answer and the largest server RSS seen while watching."""

    slowest_healthz_s: float = 0.0
    peak_rss_mb: float = 0.0
    failures: list[str] = field(default_factory=list)


@contextmanager
def watching(url: str, pid: int, every_s: float = 0.05) -> Iterator[Watch]:
    watch = Watch()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status = httpx.get(f"{url}/healthz", timeout=10).status_code
                if status != 200:
                    watch.failures.append(f"/healthz answered {status}")
            except httpx.HTTPError as exc:
                watch.failures.append(f"/healthz failed: {exc!r}")
            watch.slowest_healthz_s = max(watch.slowest_healthz_s, time.perf_counter() - start)
            watch.peak_rss_mb = max(watch.peak_rss_mb, tree_rss_mb(pid))
            stop.wait(every_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join()
