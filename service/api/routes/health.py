"""Liveness and readiness probes, and the Prometheus scrape endpoint (a router of its own so
authentication can be required for one and not the other)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics as exported
from service.api.deps import State
from service.api.responses import FastJSON

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> Response:
    """Models are loaded and warmed up, and every dependency (store, Triton) is reachable."""
    checks: dict[str, bool] = {"models": state.ready}
    extra = cast(dict[str, Callable[[], Awaitable[bool]]], state.extras.get("readiness", {}))
    for name, check in extra.items():
        checks[name] = bool(await check())
    ok = all(checks.values())
    return FastJSON(
        {"status": "ready" if ok else "not_ready", "checks": checks},
        status_code=200 if ok else 503,
    )


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "metrics"}},
)
async def metrics() -> Response:
    return Response(exported.exposition(), media_type=CONTENT_TYPE_LATEST)
