"""Optional API keys: `Authorization: Bearer <key>`, compared in constant time.

Keys come from `CLIPSERVE_API_KEYS` and/or a file (one per line, `#` comments), read once at
start-up. With no key configured the API is open, and start-up says so.
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


def load_api_keys(settings: Settings) -> tuple[bytes, ...]:
    keys = list(settings.api_keys)
    if settings.api_keys_file is not None:
        path: Path = settings.api_keys_file
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    if keys:
        log.info("API keys required: %d key(s) configured", len(keys))
    else:
        log.warning("no API keys configured: the API is open to anyone who can reach it")
    return tuple(k.encode() for k in keys)


async def require_api_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Security(_bearer)
) -> None:
    keys: tuple[bytes, ...] = request.app.state.api_keys
    if not keys:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "missing_api_key", "an API key is required", headers=challenge)
    given = credentials.credentials.encode()
    matched = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        matched |= hmac.compare_digest(given, key)
    if not matched:
        raise ApiError(401, "invalid_api_key", "the API key is not valid", headers=challenge)
