"""The server's side of the store process: start it, watch it, restart it, stop it.

A supervisor thread spawns `python -m service.store.process` and then pings it every half
second over its own connection. A ping unanswered for `store_timeout_s` means the engine is
stuck in one call holding the GIL (nothing can interrupt it), so the process is killed and
started again; a process that exits is started again too. Until it answers, `problem` says why
the store is not ready. Every spawn happens on that one long-lived thread because Linux's
"kill me when my parent dies" (PR_SET_PDEATHSIG) fires when the spawning *thread* ends.

`stop()` asks for a clean shutdown (SIGTERM: shards flushed, counts recorded) and kills the
process if it has not finished within `STOP_GRACE_S` (stuck in the engine; the WAL keeps what
was acknowledged).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from service.store.types import StoreUnavailable
from service.store.wire import SECRET_ENV, BlockingClient, StoreAddress

if TYPE_CHECKING:
    from service.config import Settings

log = logging.getLogger(__name__)
PING_INTERVAL_S = 0.5
STOP_GRACE_S = 5.0
_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


class StoreProcess:
    def __init__(
        self,
        engine: str,
        data_dir: Path,
        timeout_s: float,
        log_level: str = "info",
        log_format: str = "text",
    ) -> None:
        self.engine, self.data_dir, self.timeout_s = engine, Path(data_dir), timeout_s
        self._log = (log_level, log_format)
        self._dir = tempfile.mkdtemp(prefix="clipserve-store-")  # private: mode 0700
        self.address = StoreAddress(os.path.join(self._dir, "store.sock"), secrets.token_bytes(32))
        self.problem: str | None = "the store process is starting"
        self.restarts = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._serving: subprocess.Popen[bytes] | None = None  # the child once it has reported
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._supervise, name="store-owner", daemon=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreProcess:
        return cls(
            settings.store_engine,
            settings.data_dir,
            settings.store_timeout_s,
            settings.log_level,
            settings.log_format,
        )

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None else None

    def start(self) -> None:
        """Blocks until the store process serves; StoreUnavailable (its reason) if it cannot."""
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            raise StoreUnavailable(self._failure)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            child, serving = self._child, self._serving
        if child is not None and child.poll() is None:
            if not self._thread.is_alive():
                self._end(child)  # start() was never called or has failed
            elif child is not serving:
                child.terminate()  # still starting: its report (EOF) ends the wait
        if self._thread.is_alive():
            self._thread.join()
        shutil.rmtree(self._dir, ignore_errors=True)

    # --- supervisor thread --------------------------------------------------------------------
    def _supervise(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                child = self._spawn()
            except StoreUnavailable as exc:
                if not self._started.is_set():  # the first start: the server cannot start
                    self._failure = str(exc)
                    self._started.set()
                    return
                self.problem = f"the store process cannot restart: {exc}"
                log.error("%s", self.problem)
                self._stopping.wait(_RESTART_BACKOFF_S[min(failures, len(_RESTART_BACKOFF_S) - 1)])
                failures += 1
                continue
            failures = 0
            self.problem = None
            self._started.set()
            reason = self._watch(child)
            if self._stopping.is_set():
                self._end(child)  # from this thread: the child dies with the thread that made it
                return
            self.restarts += 1
            self.problem = f"the store process is restarting: {reason}"
            log.error("%s", self.problem)
            child.kill()
            child.wait()

    @staticmethod
    def _end(child: subprocess.Popen[bytes]) -> None:
        """A clean stop (SIGTERM), or a kill if the engine does not let go in time."""
        if child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.error("store process %d did not stop in %g s: killed", child.pid, STOP_GRACE_S)
            child.kill()
            child.wait()

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the process and wait for its one-line report (a start-up check takes as long
        as the collections need to open)."""
        level, fmt = self._log
        cmd = [
            *(sys.executable, "-m", "service.store.process", "--engine", self.engine),
            *("--data-dir", str(self.data_dir), "--socket", self.address.path),
            *("--owner", str(os.getpid()), "--log-level", level, "--log-format", fmt),
        ]
        env = {**os.environ, SECRET_ENV: self.address.secret.hex()}
        with self._lock:
            if self._stopping.is_set():
                raise StoreUnavailable("the server is stopping")
            child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            self._child = child
        assert child.stdout is not None
        line = child.stdout.readline()
        try:
            report = json.loads(line)
        except ValueError:
            child.wait()
            raise StoreUnavailable(
                f"the store process exited with code {child.returncode} before serving"
            ) from None
        if "error" in report:
            child.wait()
            raise StoreUnavailable(str(report["error"]))
        with self._lock:
            self._serving = child
        return child

    def _watch(self, child: subprocess.Popen[bytes]) -> str:
        """Ping until the process dies, stops answering, or the server stops: why it ended."""
        client: BlockingClient | None = None
        try:
            while not self._stopping.wait(PING_INTERVAL_S):
                if child.poll() is not None:
                    return f"it exited with code {child.returncode}"
                try:
                    if client is None:
                        client = BlockingClient(self.address, self.timeout_s)
                    client.call("health")
                except TimeoutError:
                    return f"it did not answer for {self.timeout_s:g} s (store_timeout_s)"
                except OSError:
                    if client is not None:
                        client.close()
                    client = None  # it is exiting, or the socket was not up yet
            return "the server is stopping"
        finally:
            if client is not None:
                client.close()
