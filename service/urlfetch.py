"""Fetch an image by http(s) URL without becoming a proxy into the private network (SSRF).

The host is resolved once, every address is checked, and the connection goes to the checked
address (TLS still verifies the real host name). Redirects are followed by hand so each hop is
checked again; size and time are capped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from service.imaging import ImageError

_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


@dataclass(frozen=True)
class UrlPolicy:
    timeout_s: float = 5.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    allowlist: tuple[str, ...] = ()


def _refuse(message: str) -> ImageError:
    return ImageError("url_not_allowed", message, 400)


def _host_allowed(host: str, allowlist: tuple[str, ...]) -> bool:
    if not allowlist:
        return True
    for entry in allowlist:
        entry = entry.lower()
        if entry.startswith("*.") and (host == entry[2:] or host.endswith(entry[1:])):
            return True
        if host == entry:
            return True
    return False


def is_public_address(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _resolve(host: str, port: int) -> str:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ImageError("url_unresolvable", f"cannot resolve host {host!r}", 400) from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise ImageError("url_unresolvable", f"cannot resolve host {host!r}", 400)
    bad = [a for a in addresses if not is_public_address(a)]
    if bad:
        raise _refuse(f"host {host!r} resolves to a non-public address ({bad[0]})")
    return addresses[0]


async def _check_url(url: str, policy: UrlPolicy) -> tuple[httpx.URL, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise _refuse("only http(s) image URLs are allowed")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise _refuse("URL has no host")
    if parts.username or parts.password:
        raise _refuse("URLs with credentials are not allowed")
    if host in _METADATA_HOSTS or host == "localhost" or host.endswith(".localhost"):
        raise _refuse(f"host {host!r} is not allowed")
    if not _host_allowed(host, policy.allowlist):
        raise _refuse(f"host {host!r} is not in the allow-list")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = await _resolve(host, port)
    netloc = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
    return httpx.URL(pinned), host


async def _fetch(client: httpx.AsyncClient, url: str, policy: UrlPolicy) -> bytes:
    for _ in range(policy.max_redirects + 1):
        pinned, host = await _check_url(url, policy)
        headers = {"Host": host, "Accept": "image/*"}
        extensions = {"sni_hostname": host} if pinned.scheme == "https" else {}
        request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            if response.is_redirect:
                location = response.headers.get("location")
                if not location:
                    raise ImageError("url_fetch_failed", "redirect without a location", 400)
                url = urljoin(url, location)
                continue
            if response.status_code != 200:
                raise ImageError(
                    "url_fetch_failed", f"image URL answered HTTP {response.status_code}", 400
                )
            declared = int(response.headers.get("content-length") or 0)
            if declared > policy.max_bytes:
                raise ImageError("image_too_large", f"image URL body is {declared} bytes", 413)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > policy.max_bytes:
                    raise ImageError("image_too_large", "image URL body exceeds the limit", 413)
            return bytes(body)
        finally:
            await response.aclose()
    raise ImageError("url_too_many_redirects", f"more than {policy.max_redirects} redirects", 400)


async def fetch_image(client: httpx.AsyncClient, url: str, policy: UrlPolicy) -> bytes:
    try:
        return await asyncio.wait_for(_fetch(client, url, policy), policy.timeout_s)
    except TimeoutError as exc:
        raise ImageError(
            "url_timeout", f"image URL took longer than {policy.timeout_s}s", 400
        ) from exc
    except httpx.HTTPError as exc:
        raise ImageError("url_fetch_failed", f"cannot fetch image URL: {exc}", 400) from exc
