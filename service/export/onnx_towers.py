"""torch tower -> ONNX file with a dynamic batch axis, checked at several batch sizes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from service.export.errors import ExportError
from service.manifest import Tower

OPSET = 17


@dataclass
class TowerGraph:
    """One tower on its way to ONNX: the torch module, example inputs (batch >= 2, as the
    exporter freezes a batch axis of 1) and the graph file every export step rewrites."""

    name: Tower
    tower: torch.nn.Module
    examples: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_name: str
    path: Path


def export_tower(
    graph: TowerGraph, custom_opsets: dict[str, int] | None = None, sequence_axis: bool = False
) -> None:
    """TorchScript-based export with `dynamic_axes`: it keeps the batch axis dynamic for every
    architecture we export (the dynamo exporter freezes it in some attention implementations).
    `custom_opsets` admits contrib operators (fused attention); `sequence_axis` makes axis 1 of
    every input dynamic too (text towers run without their padding, see fusion.py)."""
    graph.path.parent.mkdir(parents=True, exist_ok=True)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's fused inference path has no ONNX export; the plain path has
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _export(graph, custom_opsets, sequence_axis)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    check_batches(graph)


def _export(graph: TowerGraph, custom_opsets: dict[str, int] | None, sequence_axis: bool) -> None:
    per_input = {0: "batch", 1: "sequence"} if sequence_axis else {0: "batch"}
    axes = {name: per_input for name in graph.input_names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.tower,
            graph.examples,
            str(graph.path),
            input_names=graph.input_names,
            output_names=[graph.output_name],
            dynamic_axes={**axes, graph.output_name: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            custom_opsets=custom_opsets,  # contrib operators (fused attention)
        )


def check_batches(graph: TowerGraph) -> None:
    """The graph file computes what the torch tower computes, at several batch sizes."""
    session = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 7):
        xs = [x[:1].repeat(batch, *[1] * (x.dim() - 1)) for x in graph.examples]
        out = session.run(None, {n: x.numpy() for n, x in zip(graph.input_names, xs, strict=True)})
        with torch.no_grad():
            ref = graph.tower(*xs).numpy()
        if out[0].shape != ref.shape or not np.allclose(out[0], ref, atol=1e-3, rtol=1e-3):
            raise ExportError(f"{graph.path}: ONNX output differs from torch at batch {batch}")


# Ops kept in fp32 on top of onnxruntime's default list: normalisation and softmax reductions
# overflow or lose too much precision in half floats.
_FP32_OPS = ["LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Exp", "Erf"]
_SCORE_OPS = ("Add", "Mul", "Div", "Where")  # a mask or a scale between the scores and softmax


def _attention_scores(graph: Any) -> list[str]:
    """Nodes computing attention scores (q @ k^T, its scale multiplications, mask additions):
    kept in fp32 beside the softmax they feed. In half floats, onnxruntime's AttentionFusion
    (EXTENDED level and up) reads their fp16 scale constants as float and the session fails to
    load ("Tensor type mismatch. T != MLFloat16": MobileCLIP's FastViT attention, exported from
    scaled_dot_product_attention with the scale split over q and k)."""
    producer = {out: node for node in graph.node for out in node.output}
    sizes = {init.name: int(np.prod(init.dims)) for init in graph.initializer}

    def scalar(name: str) -> bool:
        node = producer.get(name)
        return sizes.get(name, 2) <= 1 or (node is not None and node.op_type == "Constant")

    keep: list[str] = []
    for softmax in (n for n in graph.node if n.op_type == "Softmax"):
        node = producer.get(softmax.input[0])
        while node is not None and node.op_type in _SCORE_OPS:
            keep.append(node.name)
            node = producer.get(node.input[0])
        if node is None or node.op_type != "MatMul":
            continue
        keep.append(node.name)
        for name in node.input:
            scale = producer.get(name)
            while (
                scale is not None
                and scale.op_type in ("Mul", "Div")
                and any(scalar(i) for i in scale.input)
            ):
                keep.append(scale.name)
                scale = producer.get(scale.input[0])
    return keep


def convert_fp16(path: Path) -> None:
    """Half-precision weights and compute, float32 inputs and outputs (callers see no change).
    The result must load where our runner checks fp16 on a CPU: the EXTENDED level (ALL is not
    tried: its CPU layout transforms crash the process on some fp16 convolutions)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    source = onnx.load(str(path))
    model = convert_float_to_float16(
        source,
        keep_io_types=True,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + _FP32_OPS,
        node_block_list=_attention_scores(source.graph),
    )
    onnx.save(model, str(path))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 4  # the failure is reported below, in one line
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][-120:]
        raise ExportError(
            f"{path.parent.parent.name}: onnxruntime cannot load the fp16 graph ({reason}); "
            "export without --fp16"
        ) from None


def simplify(graph: TowerGraph) -> None:
    """Constant folding and redundant-node removal with onnxslim, re-checked at several batch
    sizes against torch (a simplified graph must still be the same function)."""
    import onnx
    import onnxslim

    onnx.save(onnxslim.slim(onnx.load(str(graph.path))), str(graph.path))
    check_batches(graph)
