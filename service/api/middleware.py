"""Pure ASGI middleware: body size cap (before the body is read) and per-route metrics."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api import limits
from service.api.auth import key_error
from service.api.errors import ApiError, error_response
from service.api.limits import RequestLimits
from service.logs import request_id

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")


class RequestContext:
    """Give every request an id (the client's `X-Request-ID` if sane), for logs and the reply,
    and the server's request limits, for validation."""

    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", ())).get(b"x-request-id", b"")
        rid = given.decode() if _SAFE_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        limits.use(self.limits)

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            request_id.reset(token)


class ApiKeyGate:
    """Refuse a request to a protected path without a valid key before its body is read (a
    28 MB body used to be parsed before the 401). The connection is closed so that an unread
    body is never taken for the next request."""

    def __init__(self, app: ASGIApp, keys: tuple[bytes, ...], protected: tuple[str, ...]) -> None:
        self.app, self.keys, self.protected = app, keys, protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.protected):
            given = dict(scope.get("headers", ())).get(b"authorization")
            error = key_error(self.keys, given.decode("latin-1") if given else None)
            if error is not None:
                response = error_response(error)
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Answer 413 for bodies over the limit, by header or as they stream in.

    When a streamed body crosses the limit the 413 is sent at once and the app is told the
    client went away, so it stops reading and its own late answer is dropped.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            ApiError(413, "body_too_large", f"request body exceeds {self.max_bytes} bytes")
        )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class RequestMetrics:
    """Count and time requests by route template (never by raw path: bounded label sets)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, capture)
        finally:
            metrics.IN_FLIGHT.dec()
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics.REQUESTS.labels(route=path, method=method, status=str(status)).inc()
            metrics.REQUEST_LATENCY.labels(route=path, method=method).observe(
                time.perf_counter() - started
            )
