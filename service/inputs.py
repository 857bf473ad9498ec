"""Client image strings -> bytes: `data:` URIs, plain base64, or (when enabled) http(s) URLs.

Whatever makes a string not an image (bad base64, a malformed data URI, bytes that are no
image) is one error to the client: 422 `invalid_image`, with a message saying which.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

import httpx
import pybase64

from service.imaging import ImageError
from service.urlfetch import UrlPolicy, fetch_images

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")


@dataclass(frozen=True)
class ImageSourcePolicy:
    max_bytes: int
    allow_urls: bool
    url: UrlPolicy


def _b64decode(payload: str, max_bytes: int) -> bytes:
    compact = "".join(payload.split()) if any(c in payload for c in " \n\r\t") else payload
    compact += "=" * (-len(compact) % 4)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None  # URL-safe alphabet
    try:  # pybase64: the standard library's rules, SIMD-fast (60 KB: 0.35 -> 0.01 ms)
        if altchars and ("+" in compact or "/" in compact):
            raise ValueError("both base64 alphabets")  # RFC 4648 never mixes them
        return pybase64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(
            "invalid_image",
            "image is not valid base64: send a data: URI or the file's bytes in base64",
        ) from exc


@dataclass(frozen=True)
class Base64Image:
    """An image still in base64: decoded on the decode pool, not on the event loop."""

    payload: str
    max_bytes: int

    def decode(self) -> bytes:
        return _b64decode(self.payload, self.max_bytes)


ImageSource = bytes | Base64Image


def source_bytes(source: ImageSource) -> bytes:
    return source.decode() if isinstance(source, Base64Image) else source


def decode_data_uri(uri: str, max_bytes: int) -> Base64Image:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise ImageError("invalid_image", "data URI has no ',' separator")
    if not header.lower().endswith(";base64"):  # RFC 2397: case-insensitive
        raise ImageError("invalid_image", "only base64 data URIs are supported")
    return _checked(payload, max_bytes)


def _checked(payload: str, max_bytes: int) -> Base64Image:
    if len(payload) // 4 * 3 > max_bytes + 3:
        raise ImageError("image_too_large", f"image exceeds {max_bytes} bytes", 413)
    return Base64Image(payload, max_bytes)


def _local_source(value: str, policy: ImageSourcePolicy) -> ImageSource | None:
    """A data URI or plain base64 (checked for size; decoded later, on the decode pool), or
    None for a URL."""
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
        return None
    return _checked(value, policy.max_bytes)


async def image_sources(
    values: list[str], policy: ImageSourcePolicy, client: httpx.AsyncClient
) -> list[ImageSource | ImageError]:
    """Each value's image, or why it cannot be one; a request's URLs are fetched together."""
    out: list[ImageSource | ImageError] = []
    urls: list[tuple[int, str]] = []
    for i, value in enumerate(values):
        try:
            source = _local_source(value, policy)
        except ImageError as exc:
            out.append(exc)
            continue
        if source is None:
            urls.append((i, value))
        out.append(source or b"")  # a URL's place, filled in below
    if urls:
        fetched = await fetch_images(client, [url for _, url in urls], policy.url)
        for (i, _), result in zip(urls, fetched, strict=True):
            out[i] = result
    return out
