"""Service settings: one pydantic-settings model, read from `CLIPSERVE_*` env vars and CLI flags.

Every field is also a `clipserve serve --flag` (generated in `service.cli`), so the two never
drift apart. Field descriptions double as the README's configuration table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def bundled_models_dir() -> Path:
    """The model repository that ships with clipserve: inside the package when installed from a
    wheel (`pip install .`, see setup.py), else `models/` beside the package (a source checkout
    or an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "bundled_models"
    return installed if installed.is_dir() else package.parent / "models"


BUNDLED_MODELS_DIR = bundled_models_dir()

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIPSERVE_", extra="ignore")

    # --- server
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 in containers)")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field("text", description="json: one object per line")
    workers: int = Field(
        1,
        ge=1,
        description="HTTP worker processes, each with its own models, batchers and decode pool "
        "(one process serves about 1k requests/s); they share one embedded store process",
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="request line and headers, in bytes (431 above)"
    )
    max_headers: int = Field(100, ge=10, description="headers per request (431 above)")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="time for a request's line and headers to arrive, from the connection's "
        "start or the request's first byte (408; a connection that sends nothing is closed)",
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="time for a request body to arrive once its headers have (408)"
    )

    # --- models
    models_dir: Path = Field(BUNDLED_MODELS_DIR, description="model repository to serve")
    models: CommaList = Field(
        default_factory=list, description="model names to load (comma-separated; default: all)"
    )
    default_model: str | None = Field(
        None, description="model used when a request names none (default: the only/first one)"
    )

    # --- runtime
    runtime: Literal["onnxruntime", "triton"] = Field(
        "onnxruntime", description="in-process onnxruntime or a remote Triton server"
    )
    providers: CommaList = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="onnxruntime execution providers in order of preference, e.g. "
        "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider",
    )
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0: auto)")
    inter_op_threads: int = Field(1, ge=0, description="onnxruntime inter-op threads")
    ort_spinning: bool = Field(
        False,
        description="let idle onnxruntime threads spin-wait: a little faster for one busy tower, "
        "but they take cores from the other towers and the decode pool (measured: 1.4x slower "
        "when image and text batches alternate on 2 cores)",
    )
    trt_cache_dir: Path | None = Field(
        None, description="TensorRT engine and timing cache directory (default: <model>/.trt)"
    )
    trt_fp16: bool = Field(True, description="let TensorRT build fp16 engines")
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto",
        description="run through buffers preallocated per batch-size bucket (powers of two up to "
        "max_batch_size; batches are padded) with I/O binding; auto: on for CUDA / TensorRT",
    )
    cuda_graph: bool = Field(
        False,
        description="capture a CUDA graph per batch-size bucket (CUDA provider; needs every node "
        "of the graph on CUDA, else start-up fails with onnxruntime's reason)",
    )
    image_input: Literal["auto", "uint8", "float32"] = Field(
        "auto",
        description="pixels the image tower takes: uint8 (normalised in the graph: a quarter of "
        "the bytes to the device), float32 (normalised on the host), auto: uint8 where the model "
        "has that variant",
    )
    precision: Literal["float", "int8"] = Field(
        "float",
        description="towers to serve: float (as exported, fp32 or fp16) or int8 (quantized for "
        "CPUs by `clipserve export --quantize int8`) where a model has them, else its float ones",
    )
    warmup: bool = Field(True, description="run one batch per tower at start-up")

    # --- auth
    api_keys: CommaList = Field(
        default_factory=list, description="accepted API keys, comma-separated (none: open API)"
    )
    api_keys_file: Path | None = Field(
        None, description="file with one API key per line (e.g. a mounted Kubernetes Secret)"
    )
    auth_health: bool = Field(False, description="require a key for /healthz and /readyz too")
    auth_metrics: bool = Field(False, description="require a key for /metrics too")
    ui: bool = Field(
        True,
        description="serve the playground page at /ui/ (static files; every call it makes needs "
        "an API key when the server has keys)",
    )

    # --- batching
    max_batch_size: int = Field(64, ge=1, description="largest batch sent to a tower")
    max_wait_ms: float = Field(2.0, ge=0, description="how long a batch waits to fill up")
    max_queue_items: int = Field(2048, ge=1, description="items queued per tower before 429")
    batch_workers: int = Field(1, ge=1, description="concurrent batches per tower")
    request_timeout_s: float = Field(30.0, gt=0, description="per-request deadline")

    # --- input limits
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="request body size limit")
    max_items: int = Field(1024, ge=1, description="inputs per request")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="encoded bytes per image")
    max_image_pixels: int = Field(50_000_000, ge=1, description="pixels per image (bombs)")
    max_decode_s: float = Field(
        10.0, gt=0, description="images slower than this to decode are refused (422)"
    )
    max_text_chars: int = Field(
        10_000, ge=1, description="characters per text, label or prompt template"
    )
    max_prompts: int = Field(
        100_000,
        ge=1,
        description="labels x templates in one classify or label-set request (413 above); they "
        "are embedded in chunks through the queue",
    )
    max_jpeg_scans: int = Field(
        100,
        ge=1,
        description="JPEGs with more scans are refused (422): real encoders write about 10, "
        "crafted progressive files thousands that decode for minutes",
    )
    decode_memory_mb: int = Field(
        1024,
        ge=1,
        description="memory the decode threads may hold at once for decoded pixels, estimated "
        "from each image's header at 8 bytes a pixel: images wait for room, and one needing more "
        "than all of it is refused (413)",
    )
    exif_transpose: bool = Field(
        True,
        description="turn photos upright by their EXIF orientation tag, as every image viewer "
        "does (open_clip and transformers do not: false reproduces them exactly)",
    )
    decode_threads: int = Field(0, ge=0, description="image decode threads (0: CPU count)")
    decode_processes: int = Field(
        0,
        ge=0,
        description="decode images in this many worker processes instead of threads (many-core "
        "GPU hosts: the GIL caps a thread pool at a few cores)",
    )

    # --- image URLs
    allow_image_urls: bool = Field(False, description="fetch http(s) image URLs")
    url_timeout_s: float = Field(
        5.0, gt=0, description="time to fetch all image URLs of one request (fetched concurrently)"
    )
    url_max_request_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="bytes fetched from image URLs for one request (413)"
    )
    url_concurrency: int = Field(8, ge=1, description="image URLs of one request fetched at once")
    url_max_redirects: int = Field(3, ge=0, description="redirects followed per image URL")
    url_allowlist: CommaList = Field(
        default_factory=list, description="if set, only these hosts (or *.domain) are fetched"
    )

    # --- store
    data_dir: Path = Field(Path("data"), description="embedded Qdrant store directory")
    store_engine: Literal["edge", "local", "none"] = Field(
        "edge",
        description="embedded engine: Qdrant Edge (fast, default), qdrant-client local mode, or "
        "none (no collections: embeddings and classification only)",
    )
    qdrant_url: str | None = Field(None, description="Qdrant server URL (replaces embedded)")
    qdrant_api_key: str | None = Field(None, description="Qdrant API key")
    store_timeout_s: float = Field(
        10.0,
        gt=0,
        description="deadline of one call to the embedded store: past it the request answers "
        "504, and a store process that stays unresponsive this long is restarted",
    )
    max_payload_bytes: int = Field(
        256 * 1024, ge=2, description="a point's payload as JSON, in bytes (413 above)"
    )
    max_payload_depth: int = Field(
        32,
        ge=1,
        le=100,
        description="nesting of objects and arrays in a payload (422 above; Qdrant Edge cannot "
        "read back 128 levels)",
    )
    max_payload_keys: int = Field(
        4096, ge=1, description="keys in a payload, nested objects included (413 above)"
    )
    # defaults as in filters.FilterLimits (that module loads qdrant-client: too slow for the CLI)
    max_filter_depth: int = Field(
        16, ge=1, le=64, description="filters nested inside a filter, levels (deeper: 422)"
    )
    max_filter_conditions: int = Field(
        256, ge=1, description="conditions in one filter, all levels together (more: 413)"
    )
    max_filter_values: int = Field(
        16_384,
        ge=1,
        description="values inside one filter's conditions: match any / except lists, has_id "
        "ids, polygon points (more: 413)",
    )

    # --- triton
    triton_url: str = Field("localhost:8001", description="Triton server address")
    triton_protocol: Literal["grpc", "http"] = Field("grpc", description="Triton protocol")
    triton_model_name: str = Field(
        "{tower}",
        description="Triton model name of a tower; {model}: clipserve model, {tower}: tower "
        "folder (default fits tritonserver --model-repository=models/<name>)",
    )
    triton_model_version: str = Field("", description="Triton model version (empty: latest)")
    triton_timeout_s: float = Field(30.0, gt=0, description="Triton inference call timeout")
    triton_connect_timeout_s: float = Field(
        2.0, gt=0, description="Triton connect timeout (and readiness probe timeout)"
    )
    triton_retries: int = Field(2, ge=0, description="retries on transient Triton errors")
    triton_retry_backoff_s: float = Field(
        0.1, ge=0, description="first retry delay, doubled on each retry"
    )
    triton_startup_wait_s: float = Field(
        30.0, ge=0, description="how long start-up waits for Triton and its models"
    )
    triton_shm: bool = Field(
        False, description="send large inputs through system shared memory (Triton on this host)"
    )
    triton_shm_min_bytes: int = Field(
        1 << 20, ge=0, description="smallest batch (bytes of input) sent through shared memory"
    )

    @field_validator("models", "providers", "url_allowlist", "api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _some_key(cls, value: object) -> object:
        """Keys asked for (anything but blanks) and none parsed: never run the API open."""
        if isinstance(value, str) and value.strip() and not value.replace(",", "").strip():
            raise ValueError("holds separators but no key (unset it to run without keys)")
        return value
