"""The store process: one per data directory, started and owned by the server (`owner.py`),
hosting the embedded engine for every API worker over a Unix socket (`wire.py`).

Why a process of its own: Qdrant Edge holds the GIL while it works, so in a serving process one
4,096-condition filter froze the event loop, /healthz and SIGTERM for seconds. Here a slow call
stalls only store calls; the API abandons it at its deadline and the owner restarts a process
that stays unresponsive (the WAL keeps every acknowledged point).

Start-up: take the data directory (retrying briefly while a killed predecessor lets go), check
every collection (`check.py`), drop orphaned label-set collections, then print one JSON line on
stdout, `{"ready": true, "damaged": {...}}` or `{"error": "..."}`. Calls on a damaged collection
answer 503 naming it; only `exists`, `names` and `drop` reach it. SIGTERM (or the owner's pipe on
stdin closing) closes the shards, which flushes them, and records the counts for the next
check; SIGINT (Ctrl-C reaches the whole process group) is left to the owner.

    python -m service.store.process --engine edge --data-dir data --socket /path/store.sock
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from service.logs import setup_logging
from service.store.check import (
    StoreState,
    check_store,
    clean_state,
    damaged_message,
    engine_failure,
)
from service.store.facade import collect_garbage
from service.store.factory import embedded_backend
from service.store.types import SYSTEM, Backend, StoreError, StoreUnavailable
from service.store.wire import SECRET_ENV, decode, encode, read_frame, secret_matches

log = logging.getLogger("service.store.process")

# what API workers may call: the Backend protocol, less the lifecycle the host owns
METHODS = frozenset(
    {"health", "exists", "dimension", "create", "drop", "index_payload", "names", "upsert"}
    | {"retrieve", "delete", "query", "query_batch", "count", "scroll"}
    | {"set_payload", "delete_payload"}
)
_REACH_DAMAGED = frozenset({"exists", "drop", "names", "health"})
_IN_USE_WAIT_S = 10.0  # a SIGKILLed server's store process may take a moment to let go
_PR_SET_PDEATHSIG = 1


class Host:
    """Answers calls on one backend for any number of connections; a damaged collection is
    fenced off."""

    def __init__(self, backend: Backend, root: Path, secret: bytes) -> None:
        self.backend, self.root, self.secret = backend, root, secret
        self.damaged: dict[str, str] = {}
        self.state = StoreState()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.damaged, self.state = await check_store(self.backend, self.root)
        self.state.save(self.root)  # a crash from here on leaves no clean counts behind
        if SYSTEM in await self.backend.names() and SYSTEM not in self.damaged:
            await collect_garbage(self.backend)

    async def stop(self) -> None:
        final = await clean_state(self.backend, self.state, self.damaged)
        await self.backend.close()
        final.save(self.root)

    def health(self) -> str | None:
        if not self.damaged:
            return None
        return "; ".join(damaged_message(n, r) for n, r in sorted(self.damaged.items()))

    async def call(self, method: str, args: tuple[Any, ...]) -> Any:
        if method not in METHODS:
            raise StoreError(400, "unknown_store_call", f"the store has no call {method!r}")
        if method == "health":
            return self.health()
        name = args[0] if args and isinstance(args[0], str) else None
        if name in self.damaged and method not in _REACH_DAMAGED:
            raise StoreError(503, "collection_damaged", damaged_message(name, self.damaged[name]))
        result = await getattr(self.backend, method)(*args)
        if method == "drop" and name in self.damaged:
            del self.damaged[name]
            self.state.counts.pop(name, None)
            self.state.save(self.root)
        return result

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        lock = asyncio.Lock()
        try:
            if not secret_matches(await asyncio.wait_for(read_frame(reader), 5), self.secret):
                log.warning("refused a store connection with the wrong secret")
                return
            while True:
                call_id, method, args = decode(await read_frame(reader))
                task = asyncio.create_task(self._answer(call_id, method, args, writer, lock))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # the client went away
        finally:
            writer.close()

    async def _answer(
        self,
        call_id: int,
        method: str,
        args: tuple[Any, ...],
        writer: asyncio.StreamWriter,
        lock: asyncio.Lock,
    ) -> None:
        try:
            reply = (call_id, True, await self.call(method, args))
        except StoreError as exc:
            reply = (call_id, False, exc)
        except BaseException as exc:
            if not engine_failure(exc):
                raise
            log.exception("store call %s failed", method)
            reply = (call_id, False, StoreError(500, "store_error", f"the store failed: {exc}"))
        async with lock:
            try:
                writer.write(encode(reply))
                await writer.drain()
            except ConnectionError:
                pass  # the caller gave up (deadline) or its process went away


async def _open(backend: Backend) -> None:
    deadline = time.monotonic() + _IN_USE_WAIT_S
    while True:
        try:
            await backend.open()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def run(engine: str, data_dir: Path, socket_path: str, secret: bytes) -> None:
    try:
        backend, root = embedded_backend(engine, data_dir)  # local mode locks its folder here
        await _open(backend)
        host = Host(backend, root, secret)
        await host.start()
    except BaseException as exc:
        if not engine_failure(exc):
            raise
        _report({"error": f"cannot open the {engine} store in {data_dir}: {exc}"})
        raise SystemExit(1) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    threading.Thread(target=_wait_for_owner, args=(loop, stop), daemon=True).start()
    server = await asyncio.start_unix_server(host.serve_connection, path=socket_path)
    _report({"ready": True, "damaged": host.damaged})
    log.info("store process %d serving the %s store in %s", os.getpid(), engine, data_dir)
    await stop.wait()
    server.close()
    await host.stop()
    log.info("store process %d stopped cleanly", os.getpid())


def _report(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _wait_for_owner(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """The owner holds our stdin open: end of file means it is gone, so stop. (`os.read` on the
    descriptor: a thread blocked in `sys.stdin` holds its buffer's lock, which aborts the
    interpreter at exit.)"""
    while os.read(0, 4096):
        pass
    loop.call_soon_threadsafe(stop.set)


def _die_with_owner(owner: int) -> None:
    """Linux: the kernel kills us when the owner dies, even while the engine holds the GIL
    (a SIGKILLed server must not leave its data directory locked)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the stdin pipe still tells us, once the engine lets go
    if os.getppid() != owner:  # the owner died before prctl took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.store.process")
    parser.add_argument("--engine", choices=["edge", "local"], required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--owner", type=int, required=True, help="pid of the owning server")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text")
    args = parser.parse_args(argv)
    _die_with_owner(args.owner)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(args.log_level, args.log_format)
    secret = bytes.fromhex(os.environ.pop(SECRET_ENV))
    asyncio.run(run(args.engine, args.data_dir, args.socket, secret))


if __name__ == "__main__":
    main()
