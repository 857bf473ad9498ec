"""Start the HTTP server: one process, or `workers` processes under uvicorn's supervisor.

One Python process tops out at about a thousand requests/s (its event loop, JSON and the GIL),
far below what a GPU embeds. With several workers each process loads its own models, batchers
and decode pool and shares the listening socket; the supervisor replaces a worker that dies.
An embedded store belongs to one process, so workers need a Qdrant server or no store.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
import tempfile
from pathlib import Path

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
        )
        return create_app(settings, registry, api_keys)
    except (ModelFolderError, ProviderUnavailable, RunnerError, OSError) as exc:
        raise StartupError(str(exc)) from exc


def serve(settings: Settings) -> None:
    setup_logging(settings.log_level, settings.log_format)
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
        uvicorn.run(build_app(settings), **options)  # type: ignore[arg-type]
        return
    if settings.store_engine != "none" and not settings.qdrant_url:
        raise StartupError(
            f"workers={settings.workers} needs a Qdrant server (qdrant_url) or store_engine=none: "
            "an embedded store belongs to one process"
        )
    with tempfile.TemporaryDirectory(prefix="clipserve-") as tmp:
        failure = Path(tmp) / "failure"
        os.environ[_SETTINGS_ENV] = settings.model_dump_json()
        os.environ[_FAILURE_ENV] = str(failure)
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # /metrics sums over the workers
            (Path(tmp) / "metrics").mkdir()
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / "metrics")
        uvicorn.run("service.serving:worker_app", factory=True, workers=settings.workers, **options)  # type: ignore[arg-type]
        if failure.exists():
            raise StartupError(failure.read_text())


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
