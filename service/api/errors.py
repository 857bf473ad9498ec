"""One JSON error shape for every failure: `{"error": {"type", "code", "message", ...}}`.

The shape is OpenAI's, so the `openai` client raises its usual exceptions with our message.
Per-item problems in a batch are listed under `items` with their index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service import metrics
from service.api.responses import FastJSON
from service.batcher import QueueFull
from service.embedder import DeadlineExceeded, UnsupportedModality
from service.imaging import ImageError
from service.registry import UnknownModel
from service.runners.base import RunnerError
from service.store.filters import FilterError, json_path
from service.store.types import StoreError

log = logging.getLogger(__name__)

_TYPE_BRANCHES = {"str", "int", "float", "bool", "list", "dict", "TextItem", "ImageItem"}
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        items: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.param, self.items, self.headers = param, items, headers


# A response names at most this many bad items (the count says how many there were).
MAX_REPORTED_ITEMS = 100


class ItemErrors(ApiError):
    """Some items of a batch are bad: one response naming each by index (the first hundred)."""

    def __init__(self, errors: list[tuple[int, ImageError | ApiError]], param: str) -> None:
        items = [
            {
                "index": i,
                "code": e.code,
                "message": str(e) if isinstance(e, ImageError) else e.message,
            }
            for i, e in errors[:MAX_REPORTED_ITEMS]
        ]
        status = max(e.status for _, e in errors)
        first = items[0]
        super().__init__(
            status,
            str(first["code"]),
            f"{len(errors)} input(s) failed; first {param}[{first['index']}]: {first['message']}",
            param=param,
            items=items,
        )


def error_response(err: ApiError) -> FastJSON:
    """The one JSON error shape, counted by code."""
    body: dict[str, Any] = {
        "type": _TYPES.get(
            err.status, "server_error" if err.status >= 500 else "invalid_request_error"
        ),
        "code": err.code,
        "message": err.message,
        "param": err.param,
    }
    if err.items is not None:
        body["items"] = err.items
    metrics.ERRORS.labels(code=err.code).inc()
    return FastJSON({"error": body}, status_code=err.status, headers=err.headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    err = _first(errors)
    if err.get("type") == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", "")
        return (
            f"request body is not valid JSON: {detail}"
            if detail
            else "request body is not valid JSON",
            None,
        )
    # drop "body" and pydantic's union/validator branch names ("function-after[...]", "str")
    loc = [
        p
        for p in err.get("loc", ())
        if p != "body" and not (isinstance(p, str) and ("[" in p or p in _TYPE_BRANCHES))
    ]
    where = json_path(loc) or None
    msg = err.get("msg", "invalid value")
    extra = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{where}: {msg}{extra}" if where else f"{msg}{extra}"), where


def _not_json(request: Request, exc: RequestValidationError) -> str | None:
    """The content type of a body FastAPI did not read as JSON (curl's `-d` sends
    application/x-www-form-urlencoded unless told otherwise), when that is why it failed."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not kind or kind == "application/json" or kind.endswith("+json"):
        return None
    body = getattr(request.scope.get("route"), "dependant", None)
    body_params = body.body_params if body is not None else []
    if not body_params or any(isinstance(p.field_info, params.Form) for p in body_params):
        return None  # no body, or a form / file upload route
    errors = exc.errors()
    if errors and tuple(errors[0].get("loc", ()))[:1] == ("body",):
        return kind
    return None


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path: Starlette's 405 names only the methods of
    the first route whose path matched (PUT for a path that also takes GET and DELETE). Asked
    of the router method by method, through the routes' public `matches`."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]
    return ", ".join(allowed)


def _first(errors: Sequence[Any]) -> Any:
    """The error to report: a filter's first (it has its own status and code), else the first."""
    return next((e for e in errors if e.get("type") in FilterError.CODES), errors[0])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> FastJSON:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> FastJSON:
        if (kind := _not_json(request, exc)) is not None:
            return error_response(
                ApiError(
                    415,
                    "unsupported_media_type",
                    f"the request body must be JSON, sent with the header "
                    f"'content-type: application/json' (this request says {kind!r})",
                )
            )
        message, where = _validation_message(exc)
        err = _first(exc.errors()) if exc.errors() else {}
        if err.get("type") in FilterError.CODES:  # raised as pydantic errors by QdrantFilter
            status = int((err.get("ctx") or {}).get("status", 422))
            return error_response(ApiError(status, err["type"], message, param=where))
        return error_response(ApiError(422, "invalid_request", message, param=where))

    @app.exception_handler(FilterError)
    async def _filter(_: Request, exc: FilterError) -> FastJSON:
        return error_response(ApiError(exc.status, exc.code, str(exc), param="filter"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> FastJSON:
        codes = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return error_response(ApiError(exc.status_code, code, str(exc.detail), headers=headers))

    @app.exception_handler(ImageError)
    async def _image(_: Request, exc: ImageError) -> FastJSON:
        return error_response(ApiError(exc.status, exc.code, str(exc)))

    @app.exception_handler(UnknownModel)
    async def _unknown_model(_: Request, exc: UnknownModel) -> FastJSON:
        return error_response(ApiError(404, "model_not_found", str(exc.args[0]), param="model"))

    @app.exception_handler(UnsupportedModality)
    async def _modality(_: Request, exc: UnsupportedModality) -> FastJSON:
        return error_response(ApiError(400, "unsupported_modality", str(exc), param="modality"))

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(_: Request, exc: DeadlineExceeded) -> FastJSON:
        return error_response(
            ApiError(503, "deadline_exceeded", str(exc), headers={"Retry-After": "1"})
        )

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> FastJSON:
        # a store process restarting or stuck recovers by itself; a damaged collection does not
        retry = {"Retry-After": "1"} if exc.code in ("store_unavailable", "store_timeout") else None
        return error_response(ApiError(exc.status, exc.code, str(exc), headers=retry))

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, exc: QueueFull) -> FastJSON:
        return error_response(
            ApiError(
                429,
                "queue_full",
                "the server is at capacity; retry later",
                headers={"Retry-After": str(exc.retry_after_s)},
            )
        )

    @app.exception_handler(RunnerError)
    async def _runner(_: Request, exc: RunnerError) -> FastJSON:
        log.error("inference backend failed: %s", exc)
        return error_response(
            ApiError(503, "backend_unavailable", f"inference backend unavailable: {exc}")
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> FastJSON:
        log.exception("unhandled error")
        return error_response(ApiError(500, "internal_error", "internal server error"))
