"""JSON in and out with orjson: responses with numpy arrays (embeddings serialised without
copies), and request bodies parsed about 5x faster than the standard library does (1.2 ms ->
0.25 ms for 8 images as data URIs), which matters on the one event loop of a process."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute


class FastJSON(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        # orjson.JSONDecodeError is a json.JSONDecodeError: FastAPI's 422 handling still applies
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class FastJSONRoute(APIRoute):
    """A route whose request body is parsed by orjson (FastAPI's custom route class recipe)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route
