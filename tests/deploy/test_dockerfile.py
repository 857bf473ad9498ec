"""Dockerfile and .dockerignore: hadolint, and what the images must (not) contain.

No Docker engine runs here or in CI, so the images are not built: hadolint checks the file and
these tests check its stages' instructions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from tests.deploy.tools import REPO, run, tool

pytestmark = pytest.mark.deploy

DOCKERFILE = REPO / "Dockerfile"
RUNTIME_STAGES = ("cpu", "cuda")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args):
                env[key] = value.strip('"')
        return env


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): continuation lines joined, comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, line
            stages.append(Stage(name=(m.group(2) or str(len(stages))).lower(), base=m.group(1)))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                key, _, value = rest.partition("=")
                args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage], list[Stage]]:
    args, stages = parse_dockerfile(DOCKERFILE.read_text())
    return args, {s.name: s for s in stages}, stages


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint")
    # Fail on every level, style included: an accepted finding is an inline `hadolint ignore`.
    result = run([hadolint, "--no-color", "--failure-threshold", "style", DOCKERFILE])
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_hadolint_is_live() -> None:
    """The linter really lints: a known-bad Dockerfile fails (guards against a no-op binary)."""
    hadolint = tool("hadolint")
    bad = "FROM python:latest\nRUN cd /tmp && apt-get install curl\n"
    result = run([hadolint, "--no-color", "-"], input=bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag


def test_stages_and_default_target(dockerfile) -> None:
    args, stages, ordered = dockerfile
    assert {"builder", "cpu", "cuda-venv", "cuda"} <= set(stages)
    names = [s.name for s in ordered]
    # A builder that builds every stage up to --target (the legacy Docker builder) must reach
    # `cpu` without touching the CUDA base: no stage before it is built on CUDA_IMAGE.
    before_cpu = ordered[: names.index("cpu") + 1]
    assert all(s.base != "${CUDA_IMAGE}" for s in before_cpu), names
    # `docker build .` builds the last stage: the CPU image again.
    assert ordered[-1].base == "cpu" and not ordered[-1].instructions
    assert stages["builder"].base == stages["cpu"].base == "${BASE_IMAGE}"
    assert args["PYTHON_VERSION"] == "3.11"
    assert args["BASE_IMAGE"] == "docker.io/library/python:${PYTHON_VERSION}-slim"
    assert stages["cuda-venv"].base == stages["cuda"].base == "${CUDA_IMAGE}"
    assert re.fullmatch(
        r"docker\.io/nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"]
    )


def test_no_frontend_directive() -> None:
    """`# syntax=docker/dockerfile:1` makes BuildKit pull a frontend image before building, which
    fails offline; nothing in this file needs a newer frontend than the built-in one."""
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        assert not re.match(r"#\s*syntax\s*=", line, re.I), line


def test_base_images_are_fully_qualified(dockerfile) -> None:
    """Podman, Buildah and CRI-O refuse short names (`python:3.11-slim`) by default."""
    args, stages, _ = dockerfile
    for stage in stages.values():
        if stage.base in stages:  # another stage
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage.base)
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        registry = image.split("/", 1)[0]
        assert "/" in image and ("." in registry or ":" in registry), (stage.name, image)


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_runtime_image_contract(dockerfile, name: str) -> None:
    _, stages, _ = dockerfile
    stage = stages[name]
    env = stage.env()
    assert env["CLIPSERVE_HOST"] == "0.0.0.0"
    assert env["CLIPSERVE_PORT"] == "8000"
    assert env["CLIPSERVE_MODELS_DIR"] == "/app/models"
    assert env["CLIPSERVE_DATA_DIR"] == "/data"
    # Non-root, by numeric uid (Kubernetes' runAsNonRoot can only verify a number).
    (user,) = stage.all("USER")
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), user
    assert any("/data" in v for v in stage.all("VOLUME"))
    assert "8000" in stage.all("EXPOSE")
    # The default model is baked in.
    assert any(re.search(r"(^|\s)models/\s+/app/models/?$", c) for c in stage.all("COPY"))
    assert json.loads(stage.all("ENTRYPOINT")[0]) == ["clipserve"]
    assert json.loads(stage.all("CMD")[0]) == ["serve"]
    # HOME on a path uid 10001 can write under a read-only root filesystem (Kubernetes mounts
    # /tmp and /data): onnxruntime keeps its telemetry id there, CUDA its JIT cache.
    assert env["HOME"] == "/tmp"


def test_cuda_cache_on_the_data_volume(dockerfile) -> None:
    _, stages, _ = dockerfile
    assert stages["cuda"].env()["CUDA_CACHE_PATH"].startswith("/data/")


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_healthcheck_hits_healthz_with_python(dockerfile, name: str) -> None:
    _, stages, _ = dockerfile
    (check,) = stages[name].all("HEALTHCHECK")
    exec_form = json.loads(check[check.index("CMD") + 3 :].strip())
    assert exec_form[0] in ("python", "python3") and exec_form[1] == "-c"
    code = exec_form[2]
    compile(code, "<healthcheck>", "exec")  # valid Python
    assert "urllib.request" in code and "/healthz" in code
    assert "CLIPSERVE_PORT" in code


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_runtime_images_hold_no_build_tools_or_torch(dockerfile, name: str) -> None:
    _, stages, _ = dockerfile
    text = " ".join(args for _, args in stages[name].instructions)
    for banned in ("torch", "build-essential", "gcc", "g++", "[export]", "pip install", "curl"):
        assert banned not in text, f"{name} stage mentions {banned!r}"
    # Only finished virtual environments are copied in, from builder stages.
    copies_from = re.findall(r"--from=(\S+)", text)
    assert copies_from and all(src in ("builder", "cuda-venv") for src in copies_from)


def test_extras_cpu_and_gpu_never_together(dockerfile) -> None:
    _, stages, _ = dockerfile
    cpu_extras = stages["builder"].all("ARG")
    gpu_extras = stages["cuda-venv"].all("ARG")
    cpu = dict(a.split("=", 1) for a in cpu_extras if "=" in a)["CPU_EXTRAS"].split(",")
    gpu = dict(a.split("=", 1) for a in gpu_extras if "=" in a)["GPU_EXTRAS"].split(",")
    assert "cpu" in cpu and "gpu" not in cpu
    assert "gpu" in gpu and "cpu" not in gpu
    assert "export" not in cpu + gpu


# onnxruntime-gpu builds and what they link, read from each wheel (capi/build_and_package_info.py
# and the NEEDED entries of its provider libraries): CUDA, cuDNN and TensorRT majors.
ONNXRUNTIME_GPU_LINKS = {"1.31.1": {"cuda": "13", "cudnn": "9", "tensorrt": "10"}}


def test_onnxruntime_gpu_pinned_to_the_cuda_pins(dockerfile) -> None:
    args, stages, _ = dockerfile
    venv = stages["cuda-venv"]
    stage_args = dict(a.split("=", 1) for a in venv.all("ARG") if "=" in a)
    version = stage_args["ONNXRUNTIME_GPU_VERSION"]
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"' in " ".join(venv.all("RUN"))
    links = ONNXRUNTIME_GPU_LINKS.get(version)
    assert links, f"onnxruntime-gpu {version}: check what it links and add it to the table"
    cuda, cudnn = re.search(r"cuda:(\d+)\.\d+\.\d+-cudnn(\d*)", args["CUDA_IMAGE"]).groups()
    assert cuda == links["cuda"]
    assert cudnn in ("", links["cudnn"])  # nvidia/cuda's `-cudnn-` tags carry cuDNN 9 for CUDA 13
    trt = dict(a.split("=", 1) for a in stages["cuda"].all("ARG") if "=" in a)["TENSORRT_VERSION"]
    assert trt.split(".")[0] == links["tensorrt"] and trt.endswith(f"+cuda{cuda}.0")


def test_pip_constraint_reaches_the_build(dockerfile) -> None:
    """PIP_CONSTRAINT names a file in the build context: every stage that takes it copies
    deploy/constraints/ before pip runs, and .dockerignore sends that folder."""
    _, stages, _ = dockerfile
    for stage in stages.values():
        args = [a.split("=", 1)[0] for a in stage.all("ARG")]
        if "PIP_CONSTRAINT" not in args:
            continue
        kinds = [kw for kw, _ in stage.instructions]
        copy_at = [
            i
            for i, (kw, a) in enumerate(stage.instructions)
            if kw == "COPY" and a.split()[0] == "deploy/constraints/"
        ]
        pip_at = [i for i, (kw, a) in enumerate(stage.instructions) if kw == "RUN" and "pip " in a]
        assert copy_at and pip_at and copy_at[0] < pip_at[0], (stage.name, kinds)
    patterns = dockerignore_patterns()
    pins = REPO / "deploy" / "constraints" / "cpu.txt"
    assert pins.is_file()
    assert not dockerignored(str(pins.relative_to(REPO)), patterns)


def test_cuda_image_has_tensorrt_from_apt(dockerfile) -> None:
    _, stages, _ = dockerfile
    stage = stages["cuda"]
    runs = " ".join(stage.all("RUN"))
    for package in ("libnvinfer10", "libnvinfer-plugin10", "libnvonnxparsers10"):
        assert f'"{package}=${{TENSORRT_VERSION}}"' in runs
    trt = dict(a.split("=", 1) for a in stage.all("ARG") if "=" in a)["TENSORRT_VERSION"]
    # TensorRT 10 (onnxruntime-gpu links libnvinfer.so.10), built for CUDA 13.
    assert re.fullmatch(r"10\.\d+\.\d+\.\d+-1\+cuda13\.\d+", trt), trt
    assert "TensorrtExecutionProvider" in stage.env()["CLIPSERVE_PROVIDERS"]
    assert stage.env()["CLIPSERVE_TRT_CACHE_DIR"].startswith("/data/")


# --- .dockerignore ------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern (Go filepath.Match plus `**`) as a regex; like Docker, a
    pattern that matches a directory excludes everything under it."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"(?:/.*)?\Z")


def dockerignored(path: str, patterns: list[str]) -> bool:
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw[1:] if negate else raw
        if _pattern_regex(pat.strip("/")).match(path):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    patterns = dockerignore_patterns()
    model_files = [str(p.relative_to(REPO)) for p in (REPO / "models").rglob("*") if p.is_file()]
    assert any(f.endswith("model.onnx") for f in model_files)
    needed = ["pyproject.toml", "README.md", "service/__init__.py", "service/cli.py", *model_files]
    needed.append("deploy/constraints/cpu.txt")
    for path in needed:
        if "/.trt/" in f"/{path}" or "__pycache__" in path:
            continue
        assert not dockerignored(path, patterns), f"{path} would be left out of the build context"
    for path in (
        ".venv/bin/python",
        ".tools/bin/hadolint",
        ".git/config",
        "tests/conftest.py",
        "training/mnist.py",
        "data/collection/x",
        "service/__pycache__/cli.cpython-311.pyc",
        "models/mnist-clip/.trt/engine.bin",
        "deploy/docker-compose.yml",
    ):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
