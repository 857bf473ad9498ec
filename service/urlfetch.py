"""Fetch images by http(s) URL without becoming a proxy into the private network (SSRF).

The host is resolved once, every address is checked (IPv6 forms that embed an IPv4 address by
that address), and the connection goes to the checked address (TLS still verifies the real
host name). Redirects are followed by hand so each hop is checked again. A request's URLs are
fetched together: a few at a time, under one deadline and one byte budget for all of them, so
twelve slow URLs cost one timeout, not twelve, and forty large ones cannot fill the memory.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import httpx

from service.imaging import ImageError

_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


@dataclass(frozen=True)
class UrlPolicy:
    timeout_s: float = 5.0  # all URLs of a request
    max_bytes: int = 20 * 1024 * 1024  # one image
    max_redirects: int = 3
    allowlist: tuple[str, ...] = ()
    max_request_bytes: int = 64 * 1024 * 1024  # all URLs of a request
    concurrency: int = 8


MAX_URL_CHARS = 8192
# Local-use NAT64 (RFC 8215) and deprecated site-local addresses: never a public destination,
# whatever they embed; Python counts both as global.
_NEVER_PUBLIC = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("fec0::/10"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated


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


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, for the forms that route to it: mapped
    (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), SIIT (::ffff:0:a.b.c.d), NAT64
    (64:ff9b::a.b.c.d), 6to4 (2002:aabb:ccdd::) and Teredo (its client)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip.packed[:12] == bytes(12) or ip in _NAT64 or ip in _SIIT:
        return ipaddress.IPv4Address(ip.packed[12:])
    return None


def is_public_address(addr: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _NEVER_PUBLIC):
            return False
        ip = embedded_ipv4(ip) or ip
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


def _split(url: str) -> tuple[SplitResult, str, int]:
    """(parts, host, port) of a well-formed http(s) URL, else a 400 naming the problem."""
    if len(url) > MAX_URL_CHARS:
        raise ImageError("invalid_url", f"URL is longer than {MAX_URL_CHARS} characters", 400)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for ports out of range
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError as exc:  # broken IPv6 literals, bad ports
        raise ImageError("invalid_url", f"not a valid URL: {exc}", 400) from None
    if parts.scheme not in ("http", "https"):
        raise _refuse("only http(s) image URLs are allowed")
    if not host:
        raise _refuse("URL has no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host.encode("idna")  # labels empty or over 63 characters, names over 253
        except UnicodeError:
            raise ImageError("invalid_url", "URL has an invalid host name", 400) from None
    return parts, host, port or (443 if parts.scheme == "https" else 80)


async def _check_url(url: str, policy: UrlPolicy) -> tuple[httpx.URL, str]:
    parts, host, port = _split(url)
    if parts.username or parts.password:
        raise _refuse("URLs with credentials are not allowed")
    if host in _METADATA_HOSTS or host == "localhost" or host.endswith(".localhost"):
        raise _refuse(f"host {host!r} is not allowed")
    if not _host_allowed(host, policy.allowlist):
        raise _refuse(f"host {host!r} is not in the allow-list")
    address = await _resolve(host, port)
    netloc = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
    return httpx.URL(pinned), host


class _Budget:
    """Bytes that all URLs of one request may bring in together."""

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def take(self, nbytes: int) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise ImageError(
                "url_budget_exceeded",
                f"image URLs of this request exceed {self.limit} bytes together",
                413,
            )


async def _fetch(client: httpx.AsyncClient, url: str, policy: UrlPolicy, budget: _Budget) -> bytes:
    for _ in range(policy.max_redirects + 1):
        pinned, host = await _check_url(url, policy)
        headers = {"Host": host, "Accept": "image/*"}
        extensions = {"sni_hostname": host} if pinned.scheme == "https" else {}
        request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            if response.status_code in (301, 302, 303, 307, 308):
                location = response.headers.get("location")
                if not location:
                    raise ImageError("url_fetch_failed", "redirect without a location", 400)
                url = urljoin(url, location[: MAX_URL_CHARS + 1])
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
                budget.take(len(chunk))
                body += chunk
                if len(body) > policy.max_bytes:
                    raise ImageError("image_too_large", "image URL body exceeds the limit", 413)
            return bytes(body)
        finally:
            await response.aclose()
    raise ImageError("url_too_many_redirects", f"more than {policy.max_redirects} redirects", 400)


async def fetch_images(
    client: httpx.AsyncClient, urls: Sequence[str], policy: UrlPolicy
) -> list[bytes | ImageError]:
    """Each URL's bytes or the reason it could not be used, in order: `policy.concurrency` at a
    time, all within `policy.timeout_s` and `policy.max_request_bytes`."""
    budget = _Budget(policy.max_request_bytes)
    turn = asyncio.Semaphore(policy.concurrency)

    async def one(url: str) -> bytes:
        async with turn:
            try:
                return await _fetch(client, url, policy, budget)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise ImageError("url_fetch_failed", f"cannot fetch image URL: {exc}", 400) from exc

    tasks = [asyncio.ensure_future(one(url)) for url in urls]
    try:
        _, late = await asyncio.wait(tasks, timeout=policy.timeout_s)
    finally:  # the request went away, or the deadline passed: stop what is still running
        for task in tasks:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    results: list[bytes | ImageError] = []
    for task in tasks:
        if task in late:
            results.append(
                ImageError("url_timeout", f"image URLs took longer than {policy.timeout_s}s", 400)
            )
        elif isinstance(task.exception(), ImageError):
            results.append(task.exception())  # type: ignore[arg-type]
        elif task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        else:
            results.append(task.result())
    return results
