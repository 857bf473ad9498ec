"""Start the HTTP server: one process, or `workers` processes under uvicorn's supervisor.

One Python process tops out at about a thousand requests/s (its event loop, JSON and the GIL),
far below what a GPU embeds. With several workers each process loads its own models, batchers
and decode pool and shares the listening socket; the supervisor replaces a worker that dies.
An embedded store runs in a store process of its own, which the supervisor starts first and
every worker talks to (one process serving alone starts its own).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from service import metrics
from service.config import Settings
from service.http_limits import HttpLimits, LimitedHttpToolsProtocol
from service.imaging import ImageLimits
from service.logs import setup_logging
from service.manifest import ModelFolderError
from service.runners.base import RunnerError
from service.runners.onnx import ProviderUnavailable

log = logging.getLogger(__name__)

# how the supervisor hands settings to its workers, and how a worker reports why it could not start
_SETTINGS_ENV = "CLIPSERVE_WORKER_SETTINGS"
_FAILURE_ENV = "CLIPSERVE_WORKER_FAILURE_FILE"
_STARTUP_FAILURE = 3  # uvicorn's code for "failed before serving": the supervisor stops


class StartupError(Exception):
    """The server cannot start; the message is one line naming the cause."""


class _StartupFailures:
    """Wraps the app so that a failure in its lifespan start-up (the store cannot be opened,
    ...) reaches `serve` as an exception instead of a traceback logged by the ASGI server:
    Starlette sends the formatted traceback as the `lifespan.startup.failed` message, which
    uvicorn logs; without --debug the message is dropped here and the CLI prints one line."""

    def __init__(self, app: FastAPI, debug: bool) -> None:
        self.app, self.debug = app, debug
        self.failure: BaseException | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def quiet(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed" and not self.debug:
                message = {**message, "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, quiet)
        except Exception as exc:
            self.failure = exc
            raise


def _check_port_free(host: str, port: int) -> None:
    """Fail before the models load, not after, when another process holds the port."""
    if port == 0:
        return
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {host}:{port} ({exc.strerror}): another server is probably "
            "running there; stop it or pass --port"
        ) from exc


def build_app(settings: Settings) -> FastAPI:
    from service.api.app import create_app
    from service.api.auth import NoApiKeys, load_api_keys
    from service.registry import load_registry
    from service.runners.factory import runner_factory

    try:
        api_keys = load_api_keys(settings)  # before the models: a bad key file fails at once
    except (NoApiKeys, OSError) as exc:
        raise StartupError(str(exc)) from exc
    try:
        registry = load_registry(
            settings.models_dir,
            settings.models,
            settings.default_model,
            runner_factory(settings),
            ImageLimits(
                settings.max_image_bytes,
                settings.max_image_pixels,
                settings.max_decode_s,
                settings.max_jpeg_scans,
            ),
            warm_up=settings.warmup,
            exif_transpose=settings.exif_transpose,
        )
        return create_app(settings, registry, api_keys)
    except (ModelFolderError, ProviderUnavailable, RunnerError, OSError) as exc:
        raise StartupError(str(exc)) from exc


def serve(settings: Settings, debug: bool = False) -> None:
    setup_logging(settings.log_level, settings.log_format)
    _check_port_free(settings.host, settings.port)
    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
    )
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "timeout_graceful_shutdown": int(settings.request_timeout_s),
        "http": functools.partial(LimitedHttpToolsProtocol, limits=limits),
    }
    if settings.workers == 1:
        app = _StartupFailures(build_app(settings), debug)
        try:
            uvicorn.run(app, **options)  # type: ignore[arg-type]
        except SystemExit as exc:
            if app.failure is not None:
                raise StartupError(str(app.failure) or repr(app.failure)) from app.failure
            if exc.code in (0, None):
                raise
            raise StartupError(
                f"the server stopped during start-up (exit code {exc.code})"
            ) from exc
        return
    with tempfile.TemporaryDirectory(prefix="clipserve-") as tmp, _shared_store(settings):
        failure = Path(tmp) / "failure"
        os.environ[_SETTINGS_ENV] = settings.model_dump_json()
        os.environ[_FAILURE_ENV] = str(failure)
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # /metrics sums over the workers
            (Path(tmp) / "metrics").mkdir()
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / "metrics")
        uvicorn.run("service.serving:worker_app", factory=True, workers=settings.workers, **options)  # type: ignore[arg-type]
        if failure.exists():
            raise StartupError(failure.read_text())


@contextmanager
def _shared_store(settings: Settings) -> Iterator[None]:
    """The embedded store process the workers share (none for a server or no store)."""
    if settings.store_engine == "none" or settings.qdrant_url:
        yield
        return
    from service.store.owner import StoreProcess
    from service.store.types import StoreUnavailable

    owner = StoreProcess.from_settings(settings)
    try:
        owner.start()
    except StoreUnavailable as exc:
        owner.stop()
        raise StartupError(str(exc)) from exc
    os.environ.update(owner.address.export())
    try:
        yield
    finally:
        owner.stop()


def worker_app() -> FastAPI:
    """A worker's app (uvicorn imports this in each worker process)."""
    settings = Settings.model_validate_json(os.environ[_SETTINGS_ENV])
    setup_logging(settings.log_level, settings.log_format)
    atexit.register(metrics.worker_exited, os.getpid())
    try:
        return build_app(settings)
    except StartupError as exc:
        log.error("worker %d cannot start: %s", os.getpid(), exc)
        Path(os.environ[_FAILURE_ENV]).write_text(str(exc))
        sys.exit(_STARTUP_FAILURE)
