"""`GET /ui/`: the playground, a page for trying search and zero-shot classification by eye.

Static files shipped in the package (`service/api/playground/`), read once at start-up: no build
step and nothing from another origin, which the Content-Security-Policy enforces (images from a
payload's `image_url` excepted: they are the user's own data). The files are public even when
the server has API keys: a browser cannot attach an Authorization header to a page it navigates
to, and a cookie would let any other site's page use the key (cross-site request forgery). The
files hold no data and no secret (they are the same as in the published package); every call
the page makes goes through the API with the key the user types, sent as a Bearer header.
`--no-ui` removes the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response

from service.api.errors import ApiError

FOLDER = Path(__file__).resolve().parent.parent / "playground"
TYPES = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob: http: https:; connect-src 'self'; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a new release's page, not yesterday's
}


def playground_router() -> APIRouter:
    files = {name: (FOLDER / name).read_bytes() for name in TYPES}
    router = APIRouter(include_in_schema=False)

    @router.get("/ui/")
    async def page() -> Response:
        return Response(files["index.html"], media_type=TYPES["index.html"], headers=HEADERS)

    @router.get("/ui/{name}")
    async def asset(name: str) -> Response:
        if name not in files:
            raise ApiError(404, "not_found", f"the playground has no file {name!r}")
        return Response(files[name], media_type=TYPES[name], headers=HEADERS)

    return router
