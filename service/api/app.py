"""The FastAPI application: routers, error handlers, middleware and the process lifespan."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI

from service.api.auth import require_api_key
from service.api.deps import AppState
from service.api.errors import install_error_handlers
from service.api.limits import RequestLimits
from service.api.middleware import ApiKeyGate, BodyLimit, RequestContext, RequestMetrics
from service.api.routes import classify, collections, embeddings, health, models, search
from service.api.routes.playground import playground_router
from service.batcher import BatchPolicy
from service.config import Settings
from service.embedder import Embedder, decode_pool
from service.inputs import ImageSourcePolicy
from service.registry import Registry
from service.runners.base import readiness_checks
from service.store.factory import serving_store
from service.store.filters import FilterLimits
from service.urlfetch import UrlPolicy

log = logging.getLogger(__name__)

# Routers behind the API key (when keys are configured); later resources add theirs here.
API_ROUTERS = [models.router, embeddings.router, collections.router, search.router, classify.router]


def request_limits(settings: Settings, registry: Registry) -> RequestLimits:
    return RequestLimits(
        max_items=settings.max_items,
        max_text_chars=settings.max_text_chars,
        max_prompts=settings.max_prompts,
        dimensions=tuple(sorted({m.dim for m in registry.models.values()})),
        filter=FilterLimits(
            settings.max_filter_depth, settings.max_filter_conditions, settings.max_filter_values
        ),
    )


def _decode_threads(settings: Settings) -> int:
    return settings.decode_threads or os.cpu_count() or 1


def create_app(settings: Settings, registry: Registry, api_keys: tuple[bytes, ...]) -> FastAPI:
    """The app over an already loaded registry and API keys (the CLI loads them first so that
    a broken model folder or key file stops start-up with a clear message, not a traceback)."""
    policy = BatchPolicy(
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_wait_ms / 1000.0,
        max_queue_items=settings.max_queue_items,
        workers=settings.batch_workers,
    )
    image_sources = ImageSourcePolicy(
        max_bytes=settings.max_image_bytes,
        allow_urls=settings.allow_image_urls,
        url=UrlPolicy(
            timeout_s=settings.url_timeout_s,
            max_bytes=settings.max_image_bytes,
            max_redirects=settings.url_max_redirects,
            allowlist=tuple(settings.url_allowlist),
            max_request_bytes=settings.url_max_request_bytes,
            concurrency=settings.url_concurrency,
        ),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedder = Embedder(
            registry,
            policy,
            decode_pool(_decode_threads(settings), settings.decode_processes),
            max_pending_decodes=settings.max_queue_items,
            deadline_s=settings.request_timeout_s,
            decode_memory_bytes=settings.decode_memory_mb << 20,
        )
        store = serving_store(settings)
        await store.open()
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
            state = AppState(settings, registry, embedder, image_sources, http, store)
            runners = [r for m in registry.models.values() for r in m.runners.values()]
            state.extras["readiness"] = {"store": store.health, **readiness_checks(runners)}
            app.state.clipserve = state
            embedder.start()
            state.ready = True
            log.info("clipserve ready: models %s, %s store", ", ".join(registry.models), store.mode)
            try:
                yield
            finally:
                state.ready = False
                await embedder.stop()
                await store.close()

    app = FastAPI(
        title="clipserve",
        version="0.1.0",
        summary="Embeddings, zero-shot classification and retrieval for CLIP-family models",
        lifespan=lifespan,
    )
    app.state.api_keys = api_keys
    install_error_handlers(app)
    # Only a server that has keys declares the Bearer scheme (its OpenAPI schema stays honest).
    auth = [Depends(require_api_key)] if api_keys else []
    app.include_router(health.router, dependencies=auth if settings.auth_health else [])
    app.include_router(health.metrics_router, dependencies=auth if settings.auth_metrics else [])
    for router in API_ROUTERS:
        app.include_router(router, dependencies=auth)
    if settings.ui:  # public files: see service/api/routes/playground.py for why
        app.include_router(playground_router())
    protected: tuple[str, ...] = ("/v1/",)  # every API router's prefix
    protected += ("/healthz", "/readyz") if settings.auth_health else ()
    protected += ("/metrics",) if settings.auth_metrics else ()
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyGate, keys=api_keys, protected=protected if api_keys else ())
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestContext, limits=request_limits(settings, registry))
    return app
