"""Every kind of bad input gets a clear 4xx JSON error, and the server keeps serving."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.images import blocks, data_uri, encode, noise, png_bomb
from tests.server import Server, run_server

GOOD_PNG = encode(blocks(), "PNG")


def assert_error(
    response: httpx.Response, status: int | set[int], code: str | None = None
) -> dict[str, Any]:
    assert response.status_code in (status if isinstance(status, set) else {status}), response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert {"type", "code", "message"} <= set(error)
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def still_serving(url: str) -> None:
    assert httpx.get(f"{url}/healthz").status_code == 200
    ok = httpx.post(
        f"{url}/v1/embeddings", json={"input": [data_uri(GOOD_PNG)], "modality": "image"}
    )
    assert ok.status_code == 200


def post(server: Server, body: object, path: str = "/v1/embeddings") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30)


def image_request(*values: str) -> dict[str, Any]:
    return {"input": list(values), "modality": "image"}


BAD_IMAGES = [
    ("garbage", base64.b64encode(b"\x00\x01garbage" * 50).decode(), 422, "invalid_image"),
    ("truncated jpeg", data_uri(encode(noise(64, 64, 1), "JPEG")[:400]), 422, "invalid_image"),
    ("truncated png", data_uri(encode(noise(64, 64, 1), "PNG")[:100]), 422, "invalid_image"),
    ("not base64", "%%%not-base64%%%", 422, "invalid_image"),
    ("data uri without base64", "data:image/png,abc", 422, "invalid_image"),
    ("bomb", data_uri(png_bomb()), 413, "image_too_many_pixels"),
    ("too many bytes", data_uri(encode(noise(1200, 1000, 2), "PNG")), 413, "image_too_large"),
    ("unsupported format", data_uri(encode(blocks(), "PPM")), 422, "unsupported_image_format"),
    ("empty", "data:image/png;base64,", 422, "empty_image"),
    ("url while disabled", "http://example.com/a.png", 400, "image_urls_disabled"),
]


@pytest.mark.parametrize(
    ("value", "status", "code"), [b[1:] for b in BAD_IMAGES], ids=[b[0] for b in BAD_IMAGES]
)
def test_bad_images(server: Server, value: str, status: int, code: str) -> None:
    error = assert_error(post(server, image_request(value)), status, code)
    assert error["items"][0]["index"] == 0
    still_serving(server.url)


def test_mixed_batch_names_each_bad_item(server: Server) -> None:
    good = data_uri(GOOD_PNG)
    response = post(server, image_request(good, "%%bad%%", good, data_uri(b"junk" * 10)))
    error = assert_error(response, 422)
    assert [(i["index"], i["code"]) for i in error["items"]] == [
        (1, "invalid_image"),
        (3, "invalid_image"),
    ]
    mixed = post(server, {"input": [{"text": "ok"}, {"image": "%%bad%%"}]})
    assert assert_error(mixed, 422)["items"][0]["index"] == 1


REQUESTS = [
    ("empty list", {"input": []}, 400, "empty_input"),
    ("unknown model", {"input": "x", "model": "nope"}, 404, "model_not_found"),
    ("wrong type", {"input": 12}, 422, "invalid_request"),
    ("token arrays", {"input": [[1, 2, 3]]}, 422, "invalid_request"),
    ("list of ints", {"input": [1, 2]}, 422, "invalid_request"),
    ("unknown field", {"input": "x", "bogus": 1}, 422, "invalid_request"),
    ("bad modality", {"input": "x", "modality": "audio"}, 422, "invalid_request"),
    ("bad encoding", {"input": "x", "encoding_format": "int8"}, 422, "invalid_request"),
    ("other dimensions", {"input": "x", "dimensions": 3}, 400, "unsupported_dimensions"),
    ("too many items", {"input": ["x"] * 65}, 413, "too_many_items"),
    ("text too long", {"input": ["ok", "y" * 2001]}, 413, "text_too_long"),
    ("typed item with both", {"input": [{"text": "a", "image": "b"}]}, 422, "invalid_request"),
    ("nested junk", {"input": [{"text": {"a": [1]}}]}, 422, "invalid_request"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_bad_requests(server: Server, body: object, status: int, code: str) -> None:
    assert_error(post(server, body), status, code)
    still_serving(server.url)


def test_malformed_and_oversize_bodies(server: Server) -> None:
    url = f"{server.url}/v1/embeddings"
    headers = {"content-type": "application/json"}
    assert_error(httpx.post(url, content=b'{"input": ', headers=headers), {400, 422})
    assert_error(httpx.post(url, content=b"\xff\xfe", headers=headers), {400, 422})
    deep = "[" * 5000 + "]" * 5000
    assert_error(
        httpx.post(url, content=f'{{"input": {deep}}}'.encode(), headers=headers), {400, 422}
    )
    big = json.dumps({"input": ["x" * 1000] * 7000}).encode()  # 7 MB > 6 MB limit
    assert_error(httpx.post(url, content=big, headers=headers), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no content-length: the limit applies as bytes stream in
        yield b'{"input": ["'
        for _ in range(80):
            yield b"y" * 100_000
        yield b'"]}'

    assert_error(httpx.post(url, content=chunks(), headers=headers), 413, "body_too_large")
    assert_error(httpx.get(f"{server.url}/v1/nowhere"), 404)
    assert_error(httpx.get(url), 405)
    still_serving(server.url)


def test_multipart_errors(server: Server) -> None:
    url = f"{server.url}/v1/embed/images"
    assert_error(httpx.post(url, files=[("files", ("a.png", b"nope", "image/png"))]), 422)
    assert_error(httpx.post(url, data={"model": "x"}), 422)
    big = encode(noise(1200, 1000, 3), "PNG")
    files = [("files", ("ok.png", GOOD_PNG, "image/png")), ("files", ("big.png", big, "image/png"))]
    error = assert_error(httpx.post(url, files=files), 413)
    assert error["items"][0]["index"] == 1
    still_serving(server.url)


@pytest.fixture(scope="module")
def url_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("urls")
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL, "--allow-image-urls"]
    with run_server(tmp, *args, "--url-timeout-s", "3") as srv:
        yield srv


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/x.png",
        "http://localhost/x.png",
        "http://10.1.2.3/x.png",
        "http://192.168.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://0.0.0.0/x.png",
        "http://metadata.google.internal/x.png",
        "ftp://example.com/x.png",
        "http://user:pw@example.com/x.png",
        # IPv6 forms that carry an IPv4 address are judged by that address
        "http://[::127.0.0.1]/x.png",  # IPv4-compatible
        "http://[64:ff9b::127.0.0.1]/x.png",  # NAT64
        "http://[64:ff9b::a00:1]/x.png",  # NAT64 to 10.0.0.1
        "http://[64:ff9b:1::808:808]/x.png",  # local-use NAT64: never public
        "http://[2002:7f00:1::]/x.png",  # 6to4 of 127.0.0.1
        "http://[2002:a9fe:a9fe::1]/x.png",  # 6to4 of 169.254.169.254
        "http://[::ffff:0:7f00:1]/x.png",  # SIIT
        "http://[fec0::1]/x.png",  # site-local
    ],
)
def test_hostile_urls_are_refused(url_server: Server, url: str) -> None:
    response = post(url_server, image_request(url))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["items"][0]["code"] in ("url_not_allowed", "url_unresolvable")
    still_serving(url_server.url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com:99999/x.png",
        "http://example.com:-1/x.png",
        "http://[::1/x.png",
        "http://[zz::1]/x.png",
        "http://" + "a" * 100 + ".example/x.png",
        "http://a..example/x.png",
        "http://example.com/" + "a" * 100_000,
    ],
    ids=["port", "negative port", "open bracket", "bad ipv6", "long label", "empty label", "100k"],
)
def test_malformed_urls_are_client_errors(url_server: Server, url: str) -> None:
    response = post(url_server, image_request(url))
    error = assert_error(response, 400)
    assert error["items"][0]["code"] == "invalid_url", error
    still_serving(url_server.url)


def test_data_uris_are_case_insensitive(server: Server) -> None:
    """RFC 2397: the scheme and the `base64` token are case-insensitive."""
    encoded = data_uri(GOOD_PNG).split(",", 1)[1]
    for prefix in ("DATA:image/png;BASE64,", "Data:IMAGE/PNG;Base64,"):
        assert post(server, image_request(prefix + encoded)).status_code == 200


def test_405_names_every_method_of_the_path(server: Server) -> None:
    """Three routes share /v1/label-sets/{name}; the 405 names all their methods."""
    cases = {
        ("POST", "/v1/label-sets/x"): "DELETE, GET, PUT",
        ("PATCH", "/v1/embeddings"): "POST",
        ("POST", "/healthz"): "GET",
        ("DELETE", "/v1/models/mnist-clip"): "GET",
    }
    for (method, path), allow in cases.items():
        response = httpx.request(method, f"{server.url}{path}")
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allow, (method, path)


def test_queue_full_answers_429_with_retry_after(tmp_path: Path) -> None:
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL]
    small = ["--max-queue-items", "8", "--max-batch-size", "4", "--decode-threads", "2"]
    with run_server(tmp_path, *args, *small) as srv:
        body = image_request(*[data_uri(encode(noise(400, 300, i), "PNG")) for i in range(6)])
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: post(srv, body), range(48)))
        statuses = sorted({r.status_code for r in responses})
        assert set(statuses) <= {200, 429}, statuses
        assert 429 in statuses and 200 in statuses
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        still_serving(srv.url)


def test_slow_decodes_are_refused(tmp_path: Path) -> None:
    args = [
        "--models-dir",
        str(MODELS_DIR),
        "--models",
        DEFAULT_MODEL,
        "--max-decode-s",
        "0.000001",
    ]
    with run_server(tmp_path, *args) as srv:
        error = assert_error(post(srv, image_request(data_uri(GOOD_PNG))), 422)
        assert error["items"][0]["code"] == "image_decode_too_slow"
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
