"""Optional API keys: `Authorization: Bearer <key>`, compared in constant time.

Keys come from `CLIPSERVE_API_KEYS` and/or a file (one per line, `#` comments), read once at
start-up. With no key configured the API is open, and start-up says so; keys asked for that do
not parse (`" , "`, a file of comments) stop start-up instead.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import ApiError
from service.config import Settings

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="an API key, when the server has any")


class NoApiKeys(ValueError):
    """Keys were asked for but none could be read: serving the API open would be a surprise."""


def load_api_keys(settings: Settings) -> tuple[bytes, ...]:
    keys = list(settings.api_keys)
    if settings.api_keys_file is not None:
        path: Path = settings.api_keys_file
        lines = [line.strip() for line in path.read_text().splitlines()]
        from_file = [line for line in lines if line and not line.startswith("#")]
        if not from_file:
            raise NoApiKeys(f"api_keys_file {path} holds no key (only blank or # lines)")
        keys += from_file
    if keys:
        log.info("API keys required: %d key(s) configured", len(keys))
    else:
        log.warning("no API keys configured: the API is open to anyone who can reach it")
    return tuple(k.encode() for k in keys)


def key_error(keys: tuple[bytes, ...], authorization: str | None) -> ApiError | None:
    """Why a request with this `Authorization` header may not pass (None: it may)."""
    if not keys:
        return None
    challenge = {"WWW-Authenticate": "Bearer"}
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return ApiError(401, "missing_api_key", "an API key is required", headers=challenge)
    token = given.strip().encode()
    matched = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        matched |= hmac.compare_digest(token, key)
    if not matched:
        return ApiError(401, "invalid_api_key", "the API key is not valid", headers=challenge)
    return None


async def require_api_key(
    request: Request, _: HTTPAuthorizationCredentials | None = Security(_bearer)
) -> None:
    """Declares the Bearer scheme in the OpenAPI schema and checks the key (the middleware
    has checked it already for the API's paths, before reading the body)."""
    error = key_error(request.app.state.api_keys, request.headers.get("authorization"))
    if error is not None:
        raise error
