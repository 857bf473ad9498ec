"""Image URL fetching against a real local HTTP server: redirects are re-checked at every hop,
size and time are capped. DNS cannot be public here, so one name is mapped to the local server
by `FakePublicDNS` (the only fake: it stands in for a public resolver)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import service.urlfetch as urlfetch
from service.imaging import ImageError
from service.urlfetch import UrlPolicy, fetch_images, is_public_address
from tests.images import blocks, encode

PNG = encode(blocks(), "PNG")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        routes = {
            "/ok.png": (200, {"Content-Type": "image/png"}, PNG),
            "/to-loopback": (302, {"Location": "http://127.0.0.1:9/x.png"}, b""),
            "/to-private": (302, {"Location": "http://10.0.0.7/x.png"}, b""),
            "/to-metadata": (301, {"Location": "http://169.254.169.254/latest/"}, b""),
            "/to-ok": (302, {"Location": "/ok.png"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/big": (200, {"Content-Type": "image/png"}, b"x" * 300_000),
            "/missing": (404, {}, b""),
            "/to-data": (302, {"Location": "data:image/png;base64," + "A" * 5000}, b""),
        }
        if self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
            return
        status, headers, body = routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def origin() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


@pytest.fixture
def fake_public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """`images.example` -> the local server, treated as a public address; every other name
    resolves for real and is checked for real."""
    real = urlfetch._resolve

    async def resolve(host: str, port: int) -> str:
        if host == "images.example":
            return "127.0.0.1"
        return await real(host, port)

    monkeypatch.setattr(urlfetch, "_resolve", resolve)


def fetch(url: str, **policy: object) -> bytes:
    async def go() -> bytes:
        async with httpx.AsyncClient(trust_env=False) as client:
            (result,) = await fetch_images(client, [url], UrlPolicy(**policy))  # type: ignore[arg-type]
        if isinstance(result, ImageError):
            raise result
        return result

    return asyncio.run(go())


def test_address_classes() -> None:
    for addr in (
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:0:7f00:1",  # SIIT
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::808:808",  # local-use NAT64 prefix: never public
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
        "fec0::1",  # site-local
    ):
        assert not is_public_address(addr), addr
    for addr in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"):
        assert is_public_address(addr), addr


def fetch_all(urls: list[str], **policy: object) -> list[bytes | ImageError]:
    async def go() -> list[bytes | ImageError]:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await fetch_images(client, urls, UrlPolicy(**policy))  # type: ignore[arg-type]

    return asyncio.run(go())


def test_a_requests_urls_share_one_deadline(origin: int, fake_public_dns: None) -> None:
    """Twelve slow URLs (5 s each) cost one timeout, not twelve; the fast one still arrives."""
    base = f"http://images.example:{origin}"
    started = time.monotonic()
    results = fetch_all([f"{base}/ok.png"] + [f"{base}/slow"] * 12, timeout_s=2.0, concurrency=16)
    assert time.monotonic() - started < 4.5  # one request-wide timeout (one by one: 24 s)
    assert results[0] == PNG
    assert all(isinstance(r, ImageError) and r.code == "url_timeout" for r in results[1:])


def test_a_requests_urls_share_one_byte_budget(origin: int, fake_public_dns: None) -> None:
    base = f"http://images.example:{origin}"
    results = fetch_all([f"{base}/big"] * 5, max_request_bytes=1_000_000, concurrency=1)
    assert results[:3] == [b"x" * 300_000] * 3
    assert [r.code for r in results[3:] if isinstance(r, ImageError)] == ["url_budget_exceeded"] * 2
    assert all(r.status == 413 for r in results[3:] if isinstance(r, ImageError))


def test_redirect_to_a_data_uri_is_a_client_error(origin: int, fake_public_dns: None) -> None:
    with pytest.raises(ImageError) as err:
        fetch(f"http://images.example:{origin}/to-data")
    assert err.value.status == 400


def test_fetch_and_same_host_redirect(origin: int, fake_public_dns: None) -> None:
    assert fetch(f"http://images.example:{origin}/ok.png") == PNG
    assert fetch(f"http://images.example:{origin}/to-ok") == PNG


@pytest.mark.parametrize("path", ["/to-loopback", "/to-private", "/to-metadata"])
def test_redirects_into_the_private_network_are_refused(
    origin: int, fake_public_dns: None, path: str
) -> None:
    with pytest.raises(ImageError) as err:
        fetch(f"http://images.example:{origin}{path}")
    assert err.value.code == "url_not_allowed"


def test_limits(origin: int, fake_public_dns: None) -> None:
    base = f"http://images.example:{origin}"
    with pytest.raises(ImageError) as err:
        fetch(f"{base}/loop", max_redirects=3)
    assert err.value.code == "url_too_many_redirects"
    with pytest.raises(ImageError) as err:
        fetch(f"{base}/big", max_bytes=100_000)
    assert err.value.code == "image_too_large" and err.value.status == 413
    started = time.monotonic()
    with pytest.raises(ImageError) as err:
        fetch(f"{base}/slow", timeout_s=0.5)
    assert err.value.code == "url_timeout" and time.monotonic() - started < 3
    with pytest.raises(ImageError) as err:
        fetch(f"{base}/missing")
    assert err.value.code == "url_fetch_failed"


def test_allowlist(origin: int, fake_public_dns: None) -> None:
    url = f"http://images.example:{origin}/ok.png"
    assert fetch(url, allowlist=("*.example",)) == PNG
    with pytest.raises(ImageError) as err:
        fetch(url, allowlist=("cdn.example.org",))
    assert err.value.code == "url_not_allowed"


def test_unresolvable_host() -> None:
    with pytest.raises(ImageError) as err:
        fetch("http://no-such-host.invalid/x.png")
    assert err.value.code in ("url_unresolvable", "url_not_allowed")
