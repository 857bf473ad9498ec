"""Pick the runner backend the settings ask for (how a model is served, not what it is)."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.manifest import Manifest, Tower
from service.registry import RunnerFactory
from service.runners.base import TowerRunner, serving_spec
from service.runners.onnx import OrtOptions, OrtTowerRunner


def runner_factory(settings: Settings) -> RunnerFactory:
    if settings.runtime == "triton":
        from service.runners.triton import triton_runner_factory

        return triton_runner_factory(settings)
    opts = OrtOptions(
        providers=tuple(settings.providers),
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        spinning=settings.ort_spinning,
        trt_cache_dir=settings.trt_cache_dir,
        trt_fp16=settings.trt_fp16,
        max_batch_size=settings.max_batch_size,
        io_binding={"auto": None, "on": True, "off": False}[settings.io_binding],
        cuda_graph=settings.cuda_graph,
    )

    def make(model_dir: Path, manifest: Manifest, tower: Tower) -> TowerRunner:
        spec = serving_spec(model_dir, manifest, tower, settings.image_input, settings.precision)
        return OrtTowerRunner(spec.onnx_file(model_dir), spec, opts)

    return make
