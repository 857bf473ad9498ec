"""Triton `config.pbtxt` per tower: how the ONNX Runtime backend should serve it.

Kept apart from the manifest (what the model is) as Triton keeps model configuration apart from
the model: batching, instances and accelerators are serving choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from service.manifest import TensorSpec

_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8",
}


@dataclass
class TritonOptions:
    max_batch_size: int = 256
    preferred_batch_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    max_queue_delay_us: int = 2000
    instance_count: int = 1
    instance_kind: str = "KIND_AUTO"  # KIND_GPU where a GPU exists, else KIND_CPU
    tensorrt: bool = False
    tensorrt_fp16: bool = True
    tensorrt_cache: str = "/tmp/trt-cache"


def _tensor(kind: str, spec: TensorSpec) -> str:
    dims = ", ".join(str(d) for d in spec.shape[1:])
    return (
        f'{kind} [\n  {{\n    name: "{spec.name}"\n    data_type: {_TYPES[spec.dtype]}\n'
        f"    dims: [ {dims} ]\n  }}\n]\n"
    )


def render_config(
    name: str, inputs: list[TensorSpec], output: TensorSpec, opts: TritonOptions
) -> str:
    preferred = ", ".join(str(b) for b in opts.preferred_batch_sizes if b <= opts.max_batch_size)
    text = f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {opts.max_batch_size}\n'
    for spec in inputs:
        text += _tensor("input", spec)
    text += _tensor("output", output)
    text += (
        f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {opts.max_queue_delay_us}\n}}\n"
        f"instance_group [\n  {{\n    count: {opts.instance_count}\n"
        f"    kind: {opts.instance_kind}\n  }}\n]\n"
    )
    if opts.tensorrt:
        precision = "FP16" if opts.tensorrt_fp16 else "FP32"
        text += (
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [ {\n"
            '      name : "tensorrt"\n'
            f'      parameters {{ key: "precision_mode" value: "{precision}" }}\n'
            '      parameters { key: "max_workspace_size_bytes" value: "4294967296" }\n'
            '      parameters { key: "trt_engine_cache_enable" value: "1" }\n'
            f'      parameters {{ key: "trt_engine_cache_path" value: "{opts.tensorrt_cache}" }}\n'
            "    } ]\n  }\n}\n"
        )
    return text


def write_config(
    path: Path, name: str, inputs: list[TensorSpec], output: TensorSpec, opts: TritonOptions
) -> None:
    path.write_text(render_config(name, inputs, output, opts))
