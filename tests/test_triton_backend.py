"""`runtime: triton` against a real Triton Inference Server started here.

The server is the `tritonserver` binary (Triton 2.51) of the `nvidia-pytriton` wheel, from its own
venv (`.ci/install-triton.sh`). It has no ONNX Runtime backend, so `triton_onnxruntime_backend.py`
stands in for it as a Python-based backend named `onnxruntime`: Triton loads the shipped model
folder with its exported `config.pbtxt` files as they are (`platform: "onnxruntime_onnx"`, the
dynamic batcher) and runs the ONNX towers with onnxruntime. Our service reaches it with tritonclient
over HTTP and gRPC and must return the in-process runner's embeddings; killing Triton must turn
requests into 503s and readiness false, and its return must bring both back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.export.triton_config import TritonOptions as ExportOptions
from service.export.triton_config import render_config
from service.manifest import Manifest, TensorSpec, TowerSpec, load_manifest
from service.runners.base import RunnerError
from service.runners.triton import TritonOptions, split_url, triton_runner_factory
from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.docs_examples import examples
from tests.images import blocks, data_uri, encode, noise
from tests.server import REPO, Server, free_port, run_server

VENV = Path(os.environ.get("PYTRITON_VENV", REPO / ".tools" / "pytriton-venv"))
# the suite's model (the shipped default unless CLIPSERVE_TEST_MODEL[S_DIR] say otherwise)
SHIPPED = MODELS_DIR / DEFAULT_MODEL
DEV = Path("/tmp/devmodels/dev")
SHIM = Path(__file__).with_name("triton_onnxruntime_backend.py")

TEXTS = ["a photo of the number 7", "one", "a handwritten digit three", "zero zero zero"]


def _model_dir() -> Path:
    for path in (SHIPPED, DEV):
        if (path / "clipserve.json").is_file():
            return path
    pytest.fail(f"no model to serve: neither {SHIPPED} nor {DEV} exists")


def _images() -> list[str]:
    imgs = [blocks(96, 64, seed=s) for s in range(3)] + [noise(40, 50, seed=9)]
    return [data_uri(encode(img, "PNG")) for img in imgs]


# --------------------------------------------------------------------------- the Triton server


@dataclass
class TritonInstall:
    server: Path
    backends: Path  # pytriton's backends/ (python)
    stub: Path  # the Python backend stub for the venv's Python version
    libs: Path  # pytriton's bundled shared libraries
    libdir: Path  # the venv Python's own lib dir (its libpython: see TRAPS.md)
    bin: Path


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    python = VENV / "bin" / "python"
    if not python.is_file():
        pytest.fail(
            f"no Triton for the tests at {VENV}: run `bash .ci/install-triton.sh` (it makes that "
            "venv with nvidia-pytriton and onnxruntime; set PYTRITON_VENV to use another)"
        )
    probe = (
        "import json, pathlib, sys, sysconfig, pytriton\n"
        "root = pathlib.Path(pytriton.__file__).parent / 'tritonserver'\n"
        "v = f'{sys.version_info[0]}.{sys.version_info[1]}'\n"
        "print(json.dumps({'root': str(root), 'v': v, 'libdir': sysconfig.get_config_var('LIBDIR'),"
        " 'libs': str(root.parent.parent / 'nvidia_pytriton.libs')}))"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.fail(f"{VENV} is broken, rerun `bash .ci/install-triton.sh`:\n{out.stderr}")
    info = json.loads(out.stdout)
    root = Path(info["root"])
    return TritonInstall(
        server=root / "bin" / "tritonserver",
        backends=root / "backends",
        stub=root / "python_backend_stubs" / info["v"] / "triton_python_backend_stub",
        libs=Path(info["libs"]),
        libdir=Path(info["libdir"]),
        bin=VENV / "bin",
    )


@dataclass
class Triton:
    """A tritonserver process on fixed ports, so that it can be killed and started again."""

    install: TritonInstall
    repositories: list[Path]
    workdir: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        backends = self.workdir / "backends"
        if not backends.exists():
            shutil.copytree(self.install.backends / "python", backends / "python")
            shutil.copy(self.install.stub, backends / "python" / "triton_python_backend_stub")
            (backends / "onnxruntime").mkdir(parents=True)
            shutil.copy(SHIM, backends / "onnxruntime" / "model.py")

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"tritonserver-{self.starts}.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, timeout: float = 60, wait_for: str = "ready") -> None:
        self.starts += 1
        env = {
            **os.environ,
            # the venv first: the backend stub finds its Python (and onnxruntime) through PATH
            "PATH": f"{self.install.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            # this Python's own libpython, not the system's older one (TRAPS.md)
            "LD_LIBRARY_PATH": os.pathsep.join(
                p
                for p in (
                    str(self.install.libdir),
                    str(self.install.libs),
                    os.environ.get("LD_LIBRARY_PATH"),
                )
                if p
            ),
        }
        cmd = [
            str(self.install.server),
            *(f"--model-repository={r}" for r in self.repositories),
            f"--backend-directory={self.workdir / 'backends'}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=1",  # the default waits 30 s at shutdown
            "--log-verbose=0",
            *self.extra_args,
        ]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"tritonserver exited with {self.process.returncode}:\n{self.output()}")
            try:
                r = httpx.get(f"http://{self.http_url}/v2/health/{wait_for}", timeout=1)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"tritonserver not ready after {timeout}s:\n{self.output()}")

    def _stubs(self) -> dict[int, str]:
        """The Python backend stubs it started: pid -> their shared-memory region."""
        stubs = {}
        for proc in Path("/proc").iterdir():
            try:
                if not proc.name.isdigit():
                    continue
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if self.process and ppid == self.process.pid and argv[0].endswith(b"_backend_stub"):
                stubs[int(proc.name)] = argv[2].decode()
        return stubs

    def kill(self) -> None:
        """SIGKILL: no clean shutdown. Its stubs notice and exit on their own; the shared memory
        they leave in /dev/shm (Triton unlinks it only on a clean stop) is removed here."""
        if self.process is None or self.process.poll() is not None:
            return
        stubs = self._stubs()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in stubs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for region in stubs.values():
            Path("/dev/shm", region).unlink(missing_ok=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _repository(model_dir: Path, tmp: Path) -> Path:
    """The model folder itself when it has its Triton configs (as exported), else a copy with
    configs rendered by our exporter's code (the random-weight dev model has none)."""
    manifest = load_manifest(model_dir)
    if all(s.config_file(model_dir).is_file() for s in manifest.towers.values()):
        return model_dir
    repo = tmp / "repo"
    for spec in manifest.towers.values():
        (repo / spec.path).mkdir(parents=True, exist_ok=True)
        (repo / spec.path / "1").symlink_to(model_dir / spec.path / "1")
        (repo / spec.path / "config.pbtxt").write_text(
            render_config(spec.path, spec.inputs, spec.output, ExportOptions())
        )
    return repo


def _renamed(model_dir: Path, tmp: Path) -> Path:
    """A second repository with the text tower as `<model>.text` (how one Triton serves several
    clipserve models, docs/triton.md) and a max batch of 4, below our batcher's."""
    spec = load_manifest(model_dir).towers["text"]
    name = f"{model_dir.name}.text"
    repo = tmp / "renamed"
    (repo / name).mkdir(parents=True)
    (repo / name / "1").symlink_to(model_dir / spec.path / "1")
    # a long queue delay: concurrent requests surely meet in Triton's dynamic batcher
    opts = ExportOptions(max_batch_size=4, preferred_batch_sizes=[4], max_queue_delay_us=200_000)
    (repo / name / "config.pbtxt").write_text(render_config(name, spec.inputs, spec.output, opts))
    return repo


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return _model_dir()


@pytest.fixture(scope="module")
def triton(
    triton_install: TritonInstall, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Triton]:
    tmp = tmp_path_factory.mktemp("triton")
    repos = [_repository(model_dir, tmp), _renamed(model_dir, tmp)]
    # explicit model control (all loaded at start) lets a test unload a model
    explicit = ["--model-control-mode=explicit", "--load-model=*"]
    server = Triton(triton_install, repos, tmp, extra_args=explicit)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _serve_args(model_dir: Path) -> list[str]:
    return [
        "--models-dir",
        str(model_dir.parent),
        "--models",
        model_dir.name,
        "--max-wait-ms",
        "5",
    ]


@pytest.fixture(scope="module")
def in_process(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("ort"), *_serve_args(model_dir)) as srv:
        yield srv


@pytest.fixture(scope="module")
def via_triton(
    triton: Triton, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """Our service in front of Triton: over HTTP, over gRPC, and over gRPC with every input
    passed through system shared memory (started side by side)."""
    tmp = tmp_path_factory.mktemp("via-triton")
    common = [*_serve_args(model_dir), "--runtime", "triton", "--triton-retries", "1"]
    http = [*common, "--triton-protocol", "http", "--triton-url", triton.http_url]
    grpc = [*common, "--triton-protocol", "grpc", "--triton-url", triton.grpc_url]
    shm = [*grpc, "--triton-shm", "--triton-shm-min-bytes", "0"]
    with (
        run_server(tmp, *http) as h,
        run_server(tmp, *grpc) as g,
        run_server(tmp, *shm) as gs,
    ):
        yield {"http": h, "grpc": g, "grpc+shm": gs}
    # stopped (SIGTERM, a clean exit): its shared-memory regions are gone from /dev/shm
    left = [p.name for p in Path("/dev/shm").glob(f"clipserve-{gs.process.pid}-*")]
    assert not left, f"shared memory left behind: {left}"


def _embed(server: Server, inputs: list[str], modality: str) -> np.ndarray:
    r = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"input": inputs, "modality": modality, "encoding_format": "float"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


# --------------------------------------------------------------------------- tests, no server


def test_model_names_and_urls() -> None:
    opts = TritonOptions()
    assert opts.triton_name("mnist-clip", "image") == "image"
    assert TritonOptions(model_name="{model}.{tower}").triton_name("m", "text") == "m.text"
    with pytest.raises(RunnerError, match="only \\{model\\} and \\{tower\\}"):
        TritonOptions(model_name="{name}").triton_name("m", "text")
    assert split_url("localhost:8001", "grpc") == ("localhost:8001", False)
    assert split_url("https://triton.internal:8000/", "http") == ("triton.internal:8000", True)
    assert split_url("grpcs://t:8001", "grpc") == ("t:8001", True)
    with pytest.raises(RunnerError, match="unknown scheme"):
        split_url("ftp://t:1", "http")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_start_up_fails_clearly_without_triton(model_dir: Path, protocol: str) -> None:
    """No server at the URL: start-up stops with a message naming it, after a bounded wait."""
    port = free_port()
    settings = Settings(
        runtime="triton",
        triton_url=f"127.0.0.1:{port}",
        triton_protocol=protocol,  # type: ignore[arg-type]
        triton_startup_wait_s=0.3,
        triton_connect_timeout_s=0.5,
    )
    make = triton_runner_factory(settings)
    manifest = load_manifest(model_dir)
    started = time.monotonic()
    with pytest.raises(RunnerError) as err:
        make(model_dir, manifest, "text")
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert f"Triton at 127.0.0.1:{port} ({protocol})" in message, message
    assert "gave up after 0.3s waiting for model 'text'" in message, message


def _parse_config(text: str) -> object:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _graphs(manifest: Manifest) -> list[TowerSpec]:
    """Every graph of the model folder: the towers and the image tower's uint8 variant."""
    variants = [s.uint8_variant for s in manifest.towers.values() if s.uint8_variant]
    return [*manifest.towers.values(), *variants]


def _export_variants(manifest: Manifest) -> list[tuple[str, list[TensorSpec], TensorSpec, object]]:
    image, text = manifest.towers["image"], manifest.towers["text"]
    fp16 = TensorSpec(name="pixel_values", dtype="float16", shape=image.inputs[0].shape)
    ids32 = [TensorSpec(name=i.name, dtype="int32", shape=i.shape) for i in text.inputs]
    return [
        ("image", image.inputs, image.output, ExportOptions()),
        ("text", text.inputs, text.output, ExportOptions(max_batch_size=16)),
        ("image_trt", [fp16], image.output, ExportOptions(tensorrt=True, instance_count=2)),
        ("text_gpu", ids32, text.output, ExportOptions(instance_kind="KIND_GPU")),
    ]


def test_exported_configs_parse_as_triton_model_configs(model_dir: Path) -> None:
    """Every config our exporter writes is a valid `inference.ModelConfig` text proto (Triton's
    `model_config.proto`, compiled in tritonclient) with what the manifest says: the shipped
    files as they are and freshly rendered variants (TensorRT accelerator, fp16, int32 ids)."""
    manifest = load_manifest(model_dir)
    texts = [
        (spec.inputs, spec.output, spec.config_file(model_dir).read_text())
        for spec in _graphs(manifest)
    ]
    assert len(texts) == 3  # image, its uint8 variant, text
    for name, inputs, output, opts in _export_variants(manifest):
        texts.append((inputs, output, render_config(name, inputs, output, opts)))  # type: ignore[arg-type]
    for inputs, output, text in texts:
        config = _parse_config(text)
        assert config.platform == "onnxruntime_onnx"  # type: ignore[attr-defined]
        assert config.max_batch_size > 0 and config.HasField("dynamic_batching")  # type: ignore[attr-defined]
        assert [i.name for i in config.input] == [i.name for i in inputs]  # type: ignore[attr-defined]
        for got, spec in zip(config.input, inputs, strict=True):  # type: ignore[attr-defined]
            assert list(got.dims) == spec.shape[1:]
        assert [o.name for o in config.output] == [output.name]  # type: ignore[attr-defined]
        assert list(config.output[0].dims) == output.shape[1:]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- with a real Triton


@pytest.mark.slow
def test_triton_loads_the_exported_model_folder_as_is(triton: Triton, model_dir: Path) -> None:
    """The model folder is the Triton repository: its towers load with their exported configs,
    under the dynamic batcher, and concurrent requests are batched by Triton."""
    import tritonclient.http as tc

    client = tc.InferenceServerClient(triton.http_url)
    manifest = load_manifest(model_dir)
    for spec in _graphs(manifest):
        name = Path(spec.path).name
        assert client.is_model_ready(name), triton.output()
        config = client.get_model_config(name)
        assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] > 0
        assert [i["name"] for i in config["input"]] == [i.name for i in spec.inputs]
    # Triton's dynamic batcher merges concurrent single-item requests into fewer executions
    # (on the renamed text tower, whose queue delay is long enough to be sure of it)
    name = f"{model_dir.name}.text"
    spec = manifest.towers["text"]
    ids = np.ones((1, *spec.inputs[0].shape[1:]), np.int64)
    inp = tc.InferInput(spec.inputs[0].name, list(ids.shape), "INT64")
    inp.set_data_from_numpy(ids)
    pool_client = tc.InferenceServerClient(triton.http_url, concurrency=16)
    before = client.get_inference_statistics(name)["model_stats"][0]
    futures = [pool_client.async_infer(name, [inp]) for _ in range(16)]
    for f in futures:
        f.get_result()
    after = client.get_inference_statistics(name)["model_stats"][0]
    items = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert items == 16 and executions <= 8, (items, executions)


@pytest.mark.slow
def test_rendered_configs_load_in_triton(
    triton_install: TritonInstall, model_dir: Path, tmp_path: Path
) -> None:
    """Configs rendered with non-default export options load too (TensorRT accelerator block,
    fp16 inputs, two instances, a small max batch); an ONNX file that disagrees with its config
    is refused, as Triton's ONNX Runtime backend would."""
    manifest = load_manifest(model_dir)
    repo = tmp_path / "repo"
    image, text = manifest.towers["image"], manifest.towers["text"]
    cases = {
        "image_trt": (image, ExportOptions(tensorrt=True, instance_count=2)),
        "text_small": (text, ExportOptions(max_batch_size=8, preferred_batch_sizes=[4, 8])),
        "text_cpu": (text, ExportOptions(instance_kind="KIND_CPU")),
        # every default preferred size is above 16: an empty list is rendered
        "text_16": (text, ExportOptions(max_batch_size=16)),
    }
    for name, (spec, opts) in cases.items():
        (repo / name).mkdir(parents=True)
        (repo / name / "1").symlink_to(model_dir / spec.path / "1")
        (repo / name / "config.pbtxt").write_text(
            render_config(name, spec.inputs, spec.output, opts)
        )
    # a wrong config: the ONNX input is float32, this says int64
    bad = [TensorSpec(name=image.inputs[0].name, dtype="int64", shape=image.inputs[0].shape)]
    (repo / "image_bad").mkdir()
    (repo / "image_bad" / "1").symlink_to(model_dir / image.path / "1")
    (repo / "image_bad" / "config.pbtxt").write_text(
        render_config("image_bad", bad, image.output, ExportOptions())
    )
    server = Triton(triton_install, [repo], tmp_path, extra_args=["--exit-on-error=false"])
    server.start(timeout=30, wait_for="live")
    try:
        index = httpx.post(f"http://{server.http_url}/v2/repository/index", timeout=10).json()
    finally:
        server.stop()
    states = {m["name"]: m for m in index}
    for name in cases:
        assert states[name]["state"] == "READY", (states, server.output())
    assert states["image_bad"]["state"] == "UNAVAILABLE", states
    assert "TYPE_INT64" in states["image_bad"]["reason"], states


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc", "grpc+shm"])
def test_embeddings_equal_the_in_process_runner(
    triton: Triton, via_triton: dict[str, Server], in_process: Server, protocol: str
) -> None:
    srv = via_triton[protocol]
    models = httpx.get(f"{srv.url}/v1/models").json()["data"][0]
    assert models["runtime"] == "triton", models
    assert set(models["providers"].values()) == {"triton:onnxruntime:KIND_CPU"}, models
    ready = httpx.get(f"{srv.url}/readyz").json()
    assert ready["checks"]["triton"] is True, ready
    images = _images()
    for inputs, modality in ((TEXTS, "text"), (images, "image")):
        ours, ref = _embed(srv, inputs, modality), _embed(in_process, inputs, modality)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        assert _cos(ours, ref).min() >= 0.9999, _cos(ours, ref)
    # a batch larger than our batcher's and Triton's preferred sizes, with concurrent requests
    texts = [f"digit number {i}" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(lambda i: _embed(srv, texts[i : i + 5], "text"), range(0, 40, 5)))
    assert _cos(np.concatenate(parts), _embed(in_process, texts, "text")).min() >= 0.9999
    if protocol.endswith("+shm"):  # the inputs really went through our shared-memory regions
        import tritonclient.grpc as tc

        pid = srv.process.pid
        regions = tc.InferenceServerClient(triton.grpc_url).get_system_shared_memory_status(
            as_json=True
        )["regions"]
        assert any(name.startswith(f"clipserve-{pid}-") for name in regions), regions


@pytest.mark.slow
def test_unloaded_model_gives_503_and_not_ready(
    triton: Triton, via_triton: dict[str, Server]
) -> None:
    import tritonclient.http as tc

    client = tc.InferenceServerClient(triton.http_url)
    client.unload_model("image_uint8")  # the graph serving images (uint8 pixels by default)
    try:
        for protocol, srv in via_triton.items():
            r = httpx.post(
                f"{srv.url}/v1/embeddings",
                json={"input": _images()[:1], "modality": "image"},
                timeout=30,
            )
            assert r.status_code == 503, (protocol, r.text)
            assert "'image_uint8'" in r.json()["error"]["message"], r.json()
            ready = httpx.get(f"{srv.url}/readyz", timeout=30)
            assert ready.status_code == 503 and ready.json()["checks"]["triton"] is False
            assert _embed(srv, ["seven"], "text").shape[0] == 1  # the other tower still works
    finally:
        client.load_model("image_uint8")
    for protocol, srv in via_triton.items():
        assert httpx.get(f"{srv.url}/readyz", timeout=30).status_code == 200, protocol
        assert _embed(srv, _images()[:1], "image").shape[0] == 1, protocol


@pytest.mark.slow
def test_triton_down_gives_503_and_not_ready_then_recovers(
    triton: Triton, via_triton: dict[str, Server]
) -> None:
    triton.kill()
    try:
        for protocol, srv in via_triton.items():
            r = httpx.post(f"{srv.url}/v1/embeddings", json={"input": ["seven"]}, timeout=30)
            assert r.status_code == 503, (protocol, r.text)
            error = r.json()["error"]
            assert f"({protocol.split('+')[0]})" in error["message"], error
            ready = httpx.get(f"{srv.url}/readyz", timeout=30)
            assert ready.status_code == 503 and ready.json()["checks"]["triton"] is False
            assert ready.json()["checks"]["models"] is True
            assert httpx.get(f"{srv.url}/healthz").status_code == 200
            assert "clipserve_requests_total" in httpx.get(f"{srv.url}/metrics").text
    finally:
        triton.start()
    for protocol, srv in via_triton.items():
        deadline = time.monotonic() + 20
        while httpx.get(f"{srv.url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, f"{protocol}: not ready again after Triton's return"
            time.sleep(0.2)
        assert _embed(srv, ["seven"], "text").shape[0] == 1, protocol


@pytest.mark.slow
def test_wrong_model_names_stop_start_up_clearly(
    triton: Triton, model_dir: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(model_dir)
    settings = Settings(
        runtime="triton",
        triton_url=triton.grpc_url,
        triton_model_name="{model}.{tower}",
        triton_startup_wait_s=0.2,
    )
    with pytest.raises(RunnerError, match=f"model '{model_dir.name}.image_uint8' is not ready"):
        triton_runner_factory(settings)(model_dir, manifest, "image")
    # two clipserve models under the default `{tower}` names would share Triton's `text`
    make = triton_runner_factory(Settings(runtime="triton", triton_url=triton.grpc_url))
    make(model_dir, manifest, "text")
    (tmp_path / "other").symlink_to(model_dir)
    with pytest.raises(RunnerError, match="'other' both map to the Triton model 'text'"):
        make(tmp_path / "other", manifest, "text")


@pytest.mark.slow
def test_model_name_template_and_batches_above_tritons_max(triton: Triton, model_dir: Path) -> None:
    """`{model}.{tower}` names; a batch of 10 to a Triton model whose max_batch_size is 4 is sent
    in chunks, and equals the in-process runner's rows."""
    from service.runners.onnx import OrtOptions, OrtTowerRunner
    from service.texts import TextTokenizer

    manifest = load_manifest(model_dir)
    assert manifest.text is not None
    ids, mask = TextTokenizer(manifest.text, model_dir).encode([f"digit {i}" for i in range(10)])
    feeds = {"input_ids": ids, "attention_mask": mask}
    spec = manifest.towers["text"]
    expected = OrtTowerRunner(spec.onnx_file(model_dir), spec, OrtOptions()).run(feeds)
    for protocol, url, shm in (
        ("http", triton.http_url, False),
        ("grpc", triton.grpc_url, False),
        ("http", triton.http_url, True),
        ("grpc", triton.grpc_url, True),
    ):
        settings = Settings(
            runtime="triton",
            triton_url=url,
            triton_protocol=protocol,  # type: ignore[arg-type]
            triton_model_name="{model}.{tower}",
            triton_shm=shm,
            triton_shm_min_bytes=0,
        )
        runner = triton_runner_factory(settings)(model_dir, manifest, "text")
        assert runner.max_batch == 4  # type: ignore[attr-defined]
        got = runner.run(feeds)
        assert got.shape == expected.shape and _cos(got, expected).min() >= 0.9999
        if shm:  # clean-up at exit: unregistered from Triton and unlinked from /dev/shm
            ours = f"clipserve-{os.getpid()}-"
            assert any(p.name.startswith(ours) for p in Path("/dev/shm").iterdir())
            runner.conn.close_shm()  # type: ignore[attr-defined]
            assert not any(p.name.startswith(ours) for p in Path("/dev/shm").iterdir())
            status = runner.conn.call("status", lambda c: c._c.get_system_shared_memory_status())  # type: ignore[attr-defined]
            assert ours not in json.dumps(status, default=str), status


@pytest.mark.slow
def test_the_docs_recipe_for_several_models_behind_one_triton(
    triton_install: TritonInstall, model_dir: Path, in_process: Server, tmp_path: Path
) -> None:
    """docs/triton.md's recipe, as the document has it today, over a `models/` folder holding two
    clipserve models: the real tritonserver serves the repository the recipe builds (started with
    the recipe's own `--model-repository`), and clipserve on its default settings (uint8 image
    input) with `{model}.{tower}` names answers for both models as the in-process runner does."""
    (recipe,) = [
        e
        for e in examples(REPO / "docs" / "triton.md")
        if "triton-repo" in e.code and "tritonserver" in e.code
    ]
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    for name in ("first", "second"):
        (work / "models" / name).symlink_to(model_dir)
    # the recipe's `tritonserver` line records its arguments; the real server starts below
    record = 'tritonserver() { printf "%s\\n" "$@" > tritonserver.args; }\n'
    ran = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + record + recipe.code],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, f"{recipe.name}:\n{recipe.code}\n{ran.stderr}"
    args = (work / "tritonserver.args").read_text().split()
    repositories = [Path(a.split("=", 1)[1]) for a in args if a.startswith("--model-repository=")]
    assert repositories, args
    triton = Triton(triton_install, repositories, tmp_path)
    triton.start()
    try:
        serve = [
            "--models-dir",
            str(work / "models"),
            "--runtime",
            "triton",
            "--triton-url",
            triton.grpc_url,
            "--triton-model-name",
            "{model}.{tower}",
            "--triton-startup-wait-s",
            "10",
        ]
        with run_server(tmp_path, *serve) as srv:
            expected_texts = _embed(in_process, TEXTS, "text")
            expected_images = _embed(in_process, _images(), "image")
            for name in ("first", "second"):
                for inputs, modality, expected in (
                    (TEXTS, "text", expected_texts),
                    (_images(), "image", expected_images),
                ):
                    r = httpx.post(
                        f"{srv.url}/v1/embeddings",
                        json={"model": name, "input": inputs, "modality": modality},
                        timeout=30,
                    )
                    assert r.status_code == 200, r.text
                    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
                    assert _cos(got, expected).min() >= 0.9999, (name, modality)
            providers = httpx.get(f"{srv.url}/v1/models/first").json()["providers"]
            assert all(p.startswith("triton") for p in providers.values()), providers
    finally:
        triton.stop()


@pytest.mark.slow
@pytest.mark.export
def test_int8_towers_through_triton(
    triton_install: TritonInstall, int8_model: Path, tmp_path: Path
) -> None:
    """The int8 towers load in Triton with their exported configs (CPU instances), and our
    service in front of it with `--precision int8` returns the in-process int8 runner's
    embeddings: within 0.999, as dynamic quantization scales activations per batch and
    Triton's batches are not ours (the float towers agree to 0.9999 above)."""
    served = ["image_int8_uint8", "text_int8"]  # what --precision int8 serves by default
    only = ["--model-control-mode=explicit", *(f"--load-model={m}" for m in served)]
    server = Triton(triton_install, [int8_model], tmp_path, extra_args=only)
    server.start()
    try:
        common = ["--models-dir", str(int8_model.parent), "--precision", "int8"]
        common += ["--store-engine", "none"]
        remote = ["--runtime", "triton", "--triton-url", server.grpc_url, "--triton-retries", "1"]
        with run_server(tmp_path, *common, *remote) as via, run_server(tmp_path, *common) as local:
            card = httpx.get(f"{via.url}/v1/models").json()["data"][0]
            assert card["runtime"] == "triton" and card["precision"] == {
                "image": "int8",
                "text": "int8",
            }
            for inputs, modality in ((TEXTS, "text"), (_images(), "image")):
                ours, ref = _embed(via, inputs, modality), _embed(local, inputs, modality)
                assert _cos(ours, ref).min() >= 0.999, _cos(ours, ref)
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float", "int8"])
def test_the_default_model_through_triton(
    triton_install: TritonInstall, tmp_path: Path, precision: str
) -> None:
    """`tritonserver --model-repository=models/mini-clip` (docs/triton.md, the compose and chart
    default) loads all of the default model's towers, fused graphs (com.microsoft Attention) and
    int8 ones alike, and clipserve in front of it returns the in-process runner's embeddings:
    to 0.9999 for float, 0.999 for int8 (dynamic scales are per batch, Triton's batches are not
    ours)."""
    model = MODELS_DIR / "mini-clip"
    server = Triton(triton_install, [model], tmp_path)
    server.start()
    try:
        common = ["--models-dir", str(MODELS_DIR), "--models", "mini-clip"]
        common += ["--precision", precision, "--store-engine", "none"]
        remote = ["--runtime", "triton", "--triton-url", server.grpc_url, "--triton-retries", "1"]
        with run_server(tmp_path, *common, *remote) as via, run_server(tmp_path, *common) as local:
            card = httpx.get(f"{via.url}/v1/models").json()["data"][0]
            want = "int8" if precision == "int8" else "fp32"
            assert card["runtime"] == "triton" and card["precision"] == {
                "image": want,
                "text": want,
            }
            texts = ["a red heart", "two blue stars", "the digit seven", "a cat"]
            for inputs, modality in ((texts, "text"), (_images(), "image")):
                ours, ref = _embed(via, inputs, modality), _embed(local, inputs, modality)
                bound = 0.999 if precision == "int8" else 0.9999
                assert _cos(ours, ref).min() >= bound, _cos(ours, ref)
    finally:
        server.stop()
