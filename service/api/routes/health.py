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


# A check answers True / False, or None (fine) / a reason (not ready, and why).
Check = Callable[[], Awaitable[bool | str | None]]


@router.get("/readyz")
async def readyz(state: State) -> Response:
    """Models are loaded and warmed up, and every dependency (store, Triton) is reachable;
    `reasons` says what is wrong where a check knows (e.g. a damaged collection)."""
    checks: dict[str, bool] = {"models": state.ready}
    reasons: dict[str, str] = {}
    for name, check in cast(dict[str, Check], state.extras.get("readiness", {})).items():
        result = await check()
        checks[name] = result is True or result is None
        if isinstance(result, str):
            reasons[name] = result
    ok = all(checks.values())
    body: dict[str, object] = {"status": "ready" if ok else "not_ready", "checks": checks}
    if reasons:
        body["reasons"] = reasons
    return FastJSON(body, status_code=200 if ok else 503)


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "metrics"}},
)
async def metrics() -> Response:
    return Response(exported.exposition(), media_type=CONTENT_TYPE_LATEST)
