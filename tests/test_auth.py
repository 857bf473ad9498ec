"""API keys: none configured means open (and the log says so); otherwise Bearer keys only."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.server import REPO, Server, free_port, peak_rss_mb, run_server, watch_health

KEYS = ("env-key-1", "env-key-2")
FILE_KEY = "file-key-3"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("auth")
    keys_file = tmp / "keys"
    keys_file.write_text(f"# mounted secret\n\n{FILE_KEY}\n")
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL]
    env = {"CLIPSERVE_API_KEYS": ",".join(KEYS)}
    with run_server(
        tmp, *args, "--api-keys-file", str(keys_file), "--auth-metrics", env=env
    ) as srv:
        yield srv


def embed(server: Server, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(f"{server.url}/v1/embeddings", json={"input": "seven"}, headers=headers)


def test_without_keys_the_api_is_open_and_says_so(server: Server) -> None:
    assert embed(server, None).status_code == 200
    assert "no API keys configured" in server.output()


def test_no_key_wrong_key_right_key(secured: Server) -> None:
    for key in (None, "env-key", "env-key-1x", KEYS[0].upper()):
        response = embed(secured, key)
        assert response.status_code == 401, key
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "authentication_error"
    basic = httpx.post(
        f"{secured.url}/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Basic abc"}
    )
    assert basic.status_code == 401
    for key in (*KEYS, FILE_KEY):
        assert embed(secured, key).status_code == 200
    assert httpx.get(f"{secured.url}/v1/models").status_code == 401


def test_every_api_operation_needs_the_key(secured: Server) -> None:
    """Each operation of the schema under /v1 (the retrieval ones included) answers 401 without
    a valid key and declares the Bearer scheme: no route added later slips out from behind it."""
    schema = httpx.get(f"{secured.url}/openapi.json").json()
    operations = [
        (method, path, op)
        for path, item in schema["paths"].items()
        if path.startswith("/v1/")
        for method, op in item.items()
    ]
    paths = {path for _, path, _ in operations}
    for route in ("search/batch", "recommend", "points/scroll", "points/count", "points/payload"):
        assert f"/v1/collections/{{name}}/{route}" in paths, route
    for method, path, op in operations:
        url = secured.url + re.sub(r"\{[^}]+\}", "p1", path)  # any name or id will do
        r = httpx.request(method, url, json={}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401, (method, path, r.status_code)
        assert op.get("security"), (method, path)


def test_probes_stay_open_metrics_can_be_closed(secured: Server) -> None:
    assert httpx.get(f"{secured.url}/healthz").status_code == 200
    assert httpx.get(f"{secured.url}/readyz").status_code == 200
    assert httpx.get(f"{secured.url}/metrics").status_code == 401
    ok = httpx.get(f"{secured.url}/metrics", headers={"Authorization": f"Bearer {KEYS[1]}"})
    assert ok.status_code == 200


def test_openai_client_with_a_key(secured: Server) -> None:
    good = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=KEYS[0], max_retries=0)
    assert len(good.embeddings.create(model=DEFAULT_MODEL, input="one").data) == 1
    bad = openai.OpenAI(base_url=f"{secured.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model=DEFAULT_MODEL, input="one")


def test_logs_carry_request_ids_and_no_secrets(secured: Server, tmp_path: Path) -> None:
    response = httpx.post(
        f"{secured.url}/v1/embeddings",
        json={"input": "a secret sentence"},
        headers={"Authorization": f"Bearer {KEYS[0]}", "X-Request-ID": "req-123"},
    )
    assert response.headers["x-request-id"] == "req-123"
    assert len(embed(secured, KEYS[0]).headers["x-request-id"]) == 32
    log = secured.output()
    assert "req-123" in log
    for secret in (*KEYS, FILE_KEY, "a secret sentence"):
        assert secret not in log


def test_unauthenticated_bodies_are_refused_before_they_are_read(secured: Server) -> None:
    """The 401 comes from the headers alone: a client announcing 28 MB gets it without sending
    a byte of its body, and the connection is closed (the body is never read)."""
    port = int(secured.url.rsplit(":", 1)[1])
    with watch_health(secured.url) as health:
        for auth in (b"", b"Authorization: Bearer wrong\r\n"):
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(
                    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + auth
                    + b"Content-Length: 28000000\r\n\r\n"
                )
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 401 "), reply[:200]
            assert b"www-authenticate: bearer" in reply.lower()
            assert time.monotonic() - started < 5
    assert not health.failures and health.slowest_s < 1.0
    assert peak_rss_mb(secured.process.pid) < 1000


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """A server that must refuse to start: its one-line reason."""
    cmd = [sys.executable, "-m", "service", "serve", "--port", str(free_port()), *args]
    full_env = {**os.environ, "CLIPSERVE_DATA_DIR": str(tmp_path / "data"), **(env or {})}
    done = subprocess.run(cmd, env=full_env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("clipserve: error:")]
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


def test_keys_asked_for_but_none_readable_stop_start_up(tmp_path: Path) -> None:
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL]
    reason = _start(tmp_path, *args, env={"CLIPSERVE_API_KEYS": " , "})
    assert "--api-keys (CLIPSERVE_API_KEYS)" in reason and "no key" in reason
    comments = tmp_path / "keys"
    comments.write_text("# rotated out\n\n   \n# nothing here yet\n")
    reason = _start(tmp_path, *args, "--api-keys-file", str(comments))
    assert str(comments) in reason and "no key" in reason
