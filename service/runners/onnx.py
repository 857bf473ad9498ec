"""In-process onnxruntime runner: CPU, CUDA or TensorRT execution provider, in config order."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.manifest import TowerSpec
from service.runners.base import RunnerError, cut_padding, l2_normalize, select_feeds
from service.runners.bound import BoundRunner, buckets_up_to

log = logging.getLogger(__name__)
_TRT = "TensorrtExecutionProvider"


class ProviderUnavailable(RuntimeError):
    """A configured execution provider is not in this onnxruntime build."""


@dataclass(frozen=True)
class OrtOptions:
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    spinning: bool = False
    trt_cache_dir: Path | None = None
    trt_fp16: bool = True
    max_batch_size: int = 64
    # preallocated per-bucket buffers through I/O binding; None: on for CUDA / TensorRT
    io_binding: bool | None = None
    cuda_graph: bool = False


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the installed extra
        raise ProviderUnavailable(
            "onnxruntime is not installed: pip install 'clipserve[cpu]' (or [gpu], never both)"
        ) from exc
    return onnxruntime


def _trt_options(spec: TowerSpec, cache_dir: Path, opts: OrtOptions) -> dict[str, str]:
    """Persistent engine + timing caches and a batch profile 1..max_batch_size."""
    cache_dir.mkdir(parents=True, exist_ok=True)

    def shapes(batch: int) -> str:
        dims = []
        for inp in spec.inputs:
            rest = "x".join(str(d) for d in inp.shape[1:])
            dims.append(f"{inp.name}:{batch}x{rest}" if rest else f"{inp.name}:{batch}")
        return ",".join(dims)

    return {
        "trt_fp16_enable": str(opts.trt_fp16),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": shapes(1),
        "trt_profile_opt_shapes": shapes(opts.max_batch_size),
        "trt_profile_max_shapes": shapes(opts.max_batch_size),
    }


class OrtTowerRunner:
    runtime = "onnxruntime"

    def __init__(self, onnx_path: Path, spec: TowerSpec, opts: OrtOptions) -> None:
        ort = _import_ort()
        if (
            "CUDAExecutionProvider" in opts.providers
            or "TensorrtExecutionProvider" in opts.providers
        ):
            preload = getattr(ort, "preload_dlls", None)
            if preload is not None:  # finds the CUDA/cuDNN libraries that pip wheels ship
                preload()
        available = ort.get_available_providers()
        missing = [p for p in opts.providers if p not in available]
        if missing:
            raise ProviderUnavailable(
                f"execution provider(s) {', '.join(missing)} not available in this onnxruntime "
                f"build (it has {', '.join(available)}); install 'clipserve[gpu]' for CUDA/TensorRT"
            )
        if opts.cuda_graph and opts.providers[0] != "CUDAExecutionProvider":
            raise ProviderUnavailable(
                "cuda_graph needs CUDAExecutionProvider as the first provider"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.intra_op_threads
        so.inter_op_num_threads = opts.inter_op_threads
        spin = "1" if opts.spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if spec.precision == "fp16" and opts.providers[0] == "CPUExecutionProvider":
            # onnxruntime 1.2x's CPU layout optimisations crash (SIGSEGV) on some fp16 conv
            # graphs (open_clip ViT patch embeddings); fp16 on CPU is for checks, not speed
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        providers: list[Any] = []
        for name in opts.providers:
            if name == "TensorrtExecutionProvider":
                cache = opts.trt_cache_dir or onnx_path.parent.parent / ".trt"
                providers.append((name, _trt_options(spec, cache / spec.path, opts)))
            elif name == "CUDAExecutionProvider" and opts.cuda_graph:
                providers.append((name, {"enable_cuda_graph": "1"}))
            else:
                providers.append(name)
        try:
            self.session = ort.InferenceSession(str(onnx_path), so, providers=providers)
        except Exception as exc:
            raise RunnerError(f"{onnx_path}: onnxruntime cannot load the model ({exc})") from exc
        self.spec = spec
        self.provider = self.session.get_providers()[0]
        declared = {i.name for i in spec.inputs}
        actual = {i.name for i in self.session.get_inputs()}
        if declared != actual:
            raise RunnerError(
                f"{onnx_path}: ONNX inputs {sorted(actual)} differ from the manifest's "
                f"{sorted(declared)}"
            )
        on_gpu = self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        self.bound: BoundRunner | None = None
        if opts.cuda_graph or (on_gpu if opts.io_binding is None else opts.io_binding):
            device = "cuda" if on_gpu else "cpu"
            buckets = buckets_up_to(opts.max_batch_size)
            self.bound = BoundRunner(self.session, spec, device, buckets, opts.cuda_graph)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # buffers bound per bucket and TensorRT profiles have the full width: only plain runs
        if self.spec.trim_padding and self.bound is None and self.provider != _TRT:
            feeds = cut_padding(feeds)
        inputs = select_feeds(self.spec, feeds)
        if self.bound is not None:
            try:
                out = self.bound.run(inputs)
            except Exception as exc:
                if self.bound.proven or self.bound.cuda_graph:
                    raise
                # the first run (warm-up) failed: serve plainly rather than not at all
                log.warning("%s: I/O binding failed (%s); running without it", self.spec.path, exc)
                self.bound = None
            else:
                self.bound.proven = True
                return l2_normalize(out)
        return l2_normalize(self.session.run([self.spec.output.name], inputs)[0])
