"""The CPU image, built from this checkout and run as Kubernetes runs it (uid 10001, read-only
root filesystem, /tmp on a tmpfs, /data on a volume, the chart's settings): it serves what
`clipserve serve` serves, keeps collections across restarts, takes API keys from a mounted file,
stops on SIGTERM, and runs the chart's init containers and preStop hook.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import DEFAULT_MODEL
from tests.deploy.chart import configmap_env, container, objects, one, render
from tests.image import engine
from tests.image.conftest import TIMINGS
from tests.images import blocks, data_uri, encode
from tests.server import REPO, free_port, run_server

# The first test's time includes the session's base image and build (pytest-timeout counts
# fixture set-up): minutes on 2 busy cores.
pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3600)]

SIGTERM_BOUND_S = 10
PINS = REPO / "deploy" / "constraints" / "cpu.txt"
EXTERNAL_QDRANT = {"mode": "external", "external": {"url": "http://qdrant:6333"}}


def _name(role: str) -> str:
    return f"clipserve-test-{os.getpid()}-{role}"


@pytest.fixture
def started(built_image: str) -> Iterator[Any]:
    """start(role, mounts, env) -> a ready container; every one is removed afterwards."""
    containers: list[engine.Container] = []

    def start(
        role: str, mounts: tuple[engine.Mount, ...], env: dict[str, str] | None = None
    ) -> engine.Container:
        began = time.monotonic()
        c = engine.start(built_image, _name(role), free_port(), mounts=mounts, env=env)
        containers.append(c)
        c.wait_ready()
        seconds = time.monotonic() - began
        TIMINGS.setdefault("start to /readyz 200 (first)", seconds)
        TIMINGS["start to /readyz 200 (slowest)"] = max(
            seconds, TIMINGS.get("start to /readyz 200 (slowest)", 0)
        )
        return c

    yield start
    for c in containers:
        c.remove()


def _embed(url: str, model: str, body: dict[str, Any], key: str | None = None) -> np.ndarray:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(
        f"{url}/v1/embeddings", json={"model": model, **body}, headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    return np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float64)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_serves_what_clipserve_serve_serves(started: Any, tmp_path: Path) -> None:
    data = engine.volume_dir(tmp_path / "data")
    c = started("parity", (engine.Mount(data, "/data"),))
    ready = httpx.get(f"{c.url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    # The HEALTHCHECK survived the build (Docker format) and passes.
    health = subprocess.run(
        [*engine.PODMAN, "healthcheck", "run", c.name], capture_output=True, text=True, check=False
    )
    assert health.returncode == 0, health.stdout + health.stderr
    # HOME is writable: onnxruntime warns at start-up when it cannot keep its telemetry id.
    assert "[W:onnxruntime" not in c.logs(), c.logs()

    models = [m["id"] for m in httpx.get(f"{c.url}/v1/models").json()["data"]]
    assert models
    texts = {"input": ["a photo of the number seven", "zero", "a handwritten 3"]}
    pictures = [data_uri(encode(blocks(96, 64, seed), "PNG")) for seed in range(3)]
    images = {"input": pictures, "modality": "image"}
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    for model in models:
        args = ["--models-dir", str(REPO / "models"), "--models", model]
        with run_server(outside_dir, *args) as outside:
            for body in (texts, images):
                inside = _embed(c.url, model, body)
                reference = _embed(outside.url, model, body)
                assert inside.shape == reference.shape
                cosines = _cosines(inside, reference)
                assert cosines.min() >= 0.9999, (model, body.get("modality", "text"), cosines)


def test_collection_survives_a_restart_and_sigterm_stops_it(started: Any, tmp_path: Path) -> None:
    data = engine.volume_dir(tmp_path / "data")
    mounts = (engine.Mount(data, "/data"),)
    first = started("store-1", mounts)
    created = httpx.put(f"{first.url}/v1/collections/kept", json={}, timeout=30)
    assert created.status_code == 201, created.text
    points = {"items": [{"id": 7, "text": "a handwritten seven", "payload": {"digit": 7}}]}
    upsert = httpx.post(f"{first.url}/v1/collections/kept/points", json=points, timeout=30)
    assert upsert.status_code == 200, upsert.text

    seconds, status = first.terminate()
    TIMINGS["SIGTERM to exit"] = seconds
    assert seconds < SIGTERM_BOUND_S, f"SIGTERM took {seconds:.1f} s"
    assert status in (0, 128 + 15), first.logs()
    assert "Application shutdown complete" in first.logs()
    first.remove()

    second = started("store-2", mounts)
    kept = httpx.get(f"{second.url}/v1/collections/kept", timeout=10)
    assert kept.status_code == 200 and kept.json()["count"] == 1, kept.text
    point = httpx.get(f"{second.url}/v1/collections/kept/points/7", timeout=10)
    assert point.status_code == 200 and point.json()["payload"] == {"digit": 7}, point.text
    search = httpx.post(
        f"{second.url}/v1/collections/kept/search", json={"query": {"text": "seven"}}, timeout=30
    )
    assert search.status_code == 200 and search.json()["results"][0]["id"] == 7, search.text


def test_api_keys_from_the_charts_mounted_secret(started: Any, tmp_path: Path) -> None:
    """Settings from the chart's ConfigMap, keys from its Secret mounted as a file (mode 0440,
    group = fsGroup, as the kubelet writes it)."""
    out = render({"apiKeys": {"enabled": True, "keys": ["k-one", "k-two"]}})
    env = configmap_env(out)
    keys_file = Path(env["CLIPSERVE_API_KEYS_FILE"])
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / keys_file.name).write_text("k-one\nk-two\n")
    os.chown(secret_dir / keys_file.name, 0, 10001)
    os.chmod(secret_dir / keys_file.name, 0o440)
    data = engine.volume_dir(tmp_path / "data")
    mounts = (
        engine.Mount(data, "/data"),
        engine.Mount(secret_dir, str(keys_file.parent), read_only=True),
    )
    c = started("keys", mounts, env)
    body = {"model": DEFAULT_MODEL, "input": ["seven"]}
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = httpx.post(f"{c.url}/v1/embeddings", json=body, headers=headers, timeout=30)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["type"] == "authentication_error"
    ok = httpx.post(
        f"{c.url}/v1/embeddings", json=body, headers={"authorization": "Bearer k-two"}, timeout=30
    )
    assert ok.status_code == 200, ok.text
    assert httpx.get(f"{c.url}/readyz", timeout=5).status_code == 200  # the probes stay open
    logs = c.logs()
    assert "k-one" not in logs and "k-two" not in logs


def test_prestop_hook_runs_in_the_image_while_it_serves(started: Any, tmp_path: Path) -> None:
    out = render({})
    command = container(one(out, "Deployment"), "clipserve")["lifecycle"]["preStop"]["exec"]
    c = started("prestop", (engine.Mount(engine.volume_dir(tmp_path / "data"), "/data"),))
    began = time.monotonic()
    hook = subprocess.Popen(
        [*engine.PODMAN, "exec", c.name, *command["command"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert httpx.get(f"{c.url}/readyz", timeout=5).status_code == 200  # still serving meanwhile
    output, _ = hook.communicate(timeout=120)
    assert hook.returncode == 0, output
    assert time.monotonic() - began >= float(command["command"][1]) - 1


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _run_init(
    image: str, init: dict[str, Any], pod: dict[str, Any], volumes: dict[str, Path]
) -> None:
    """Run a rendered init container in `image`: its command, env, user and volume mounts.
    The model image it stands for keeps models at /models (the default command's source),
    stood in by the repository's models/, unless a volume mounted there hides it."""
    sc = {**pod.get("securityContext", {}), **init.get("securityContext", {})}
    mounts = [
        engine.Mount(volumes[m["name"]], m["mountPath"], m.get("readOnly", False))
        for m in init["volumeMounts"]
    ]
    if all(m.target != "/models" for m in mounts):
        mounts.append(engine.Mount(REPO / "models", "/models", read_only=True))
    env = {e["name"]: e["value"] for e in init.get("env", [])}
    result = engine.run_once(
        image,
        init["command"],
        mounts=tuple(mounts),
        env=env,
        user=f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}",
    )
    assert result.returncode == 0, f"init container {init['name']}: {result.stdout}{result.stderr}"


def test_charts_init_containers_fill_the_model_volume_in_the_image(
    built_image: str, started: Any, tmp_path: Path
) -> None:
    """Render the chart with models.source=init (the init image: this image, as a model image
    would be) and with Triton copying the clipserve image's models; run each Deployment's init
    container, then the pod's main container on what it wrote."""
    renders = {
        "init": render(
            {
                "models": {
                    "source": "init",
                    "names": [DEFAULT_MODEL],
                    "init": {"image": built_image},
                },
                "triton": {"enabled": True, "model": DEFAULT_MODEL},
                "qdrant": EXTERNAL_QDRANT,
            }
        ),
        "image": render({"triton": {"enabled": True, "model": DEFAULT_MODEL}}),
    }
    for source, out in renders.items():
        for deployment in objects(out, "Deployment"):
            pod = _pod(deployment)
            if not pod.get("initContainers"):
                continue
            models = engine.volume_dir(tmp_path / source / deployment["metadata"]["name"])
            (init,) = pod["initContainers"]
            _run_init(built_image, init, pod, {"models": models})
            main = pod["containers"][0]
            (mount,) = [m for m in main["volumeMounts"] if m["name"] == "models"]
            if main["name"] == "triton":
                repo_arg = next(a for a in main["args"] if a.startswith("--model-repository="))
                folder = Path(repo_arg.split("=", 1)[1]).relative_to(mount["mountPath"])
                for tower in ("image", "text"):
                    assert (models / folder / tower / "config.pbtxt").is_file(), source
                    assert (models / folder / tower / "1" / "model.onnx").is_file(), source
                continue
            # clipserve on the filled volume, with the chart's settings (the Qdrant server of
            # this value set is not here: the embedded store stands in).
            env = {k: v for k, v in configmap_env(out).items() if "QDRANT" not in k}
            env = {k: v for k, v in env.items() if "TRITON" not in k and k != "CLIPSERVE_RUNTIME"}
            data = engine.volume_dir(tmp_path / source / "data")
            c = started(
                f"models-{source}",
                (
                    engine.Mount(models, mount["mountPath"], read_only=True),
                    engine.Mount(data, "/data"),
                ),
                env,
            )
            served = [m["id"] for m in httpx.get(f"{c.url}/v1/models").json()["data"]]
            assert served == [DEFAULT_MODEL]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_image_holds_exactly_the_pinned_versions(built_image: str) -> None:
    """PIP_CONSTRAINT reached pip: every installed distribution is the pinned version (apart
    from clipserve itself and what `python -m venv` seeds)."""
    pins = {
        _normal(name): version
        for name, version in (
            line.split("==")
            for line in PINS.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    }
    listing = engine.run_once(
        built_image,
        [
            "python",
            "-c",
            "import importlib.metadata as m, json;"
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
        mounts=(),
        env={},
        user="10001:10001",
    )
    assert listing.returncode == 0, listing.stderr
    installed = {_normal(k): v for k, v in json.loads(listing.stdout).items()}
    seeded = {"clipserve", "pip", "setuptools"}
    assert {k: v for k, v in installed.items() if k not in seeded} == pins
