"""Client image strings -> bytes: `data:` URIs, plain base64, or (when enabled) http(s) URLs."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import httpx

from service.imaging import ImageError
from service.urlfetch import UrlPolicy, fetch_image

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")


@dataclass(frozen=True)
class ImageSourcePolicy:
    max_bytes: int
    allow_urls: bool
    url: UrlPolicy


def _b64decode(payload: str, max_bytes: int) -> bytes:
    if len(payload) // 4 * 3 > max_bytes + 3:
        raise ImageError("image_too_large", f"image exceeds {max_bytes} bytes", 413)
    compact = "".join(payload.split())
    compact += "=" * (-len(compact) % 4)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None  # URL-safe alphabet
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("invalid_base64", "image is not valid base64", 400) from exc


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise ImageError("invalid_data_uri", "data URI has no ',' separator", 400)
    if not header.endswith(";base64"):
        raise ImageError("invalid_data_uri", "only base64 data URIs are supported", 400)
    return _b64decode(payload, max_bytes)


async def image_bytes(value: str, policy: ImageSourcePolicy, client: httpx.AsyncClient) -> bytes:
    head = value[:16].lower()
    if head.startswith("data:"):
        return decode_data_uri(value, policy.max_bytes)
    if _SCHEME.match(head):
        if not policy.allow_urls:
            raise ImageError(
                "image_urls_disabled",
                "image URLs are disabled on this server; send a data: URI or base64",
                400,
            )
        return await fetch_image(client, value, policy.url)
    return _b64decode(value, policy.max_bytes)
