"""torch tower -> ONNX file with a dynamic batch axis, checked at several batch sizes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from service.export.errors import ExportError

OPSET = 17


def export_tower(
    tower: torch.nn.Module,
    example: torch.Tensor,
    input_name: str,
    output_name: str,
    path: Path,
    custom_opsets: dict[str, int] | None = None,
    sequence_axis: bool = False,
) -> None:
    """TorchScript-based export with `dynamic_axes`: it keeps the batch axis dynamic for every
    architecture we export (the dynamo exporter freezes it in some attention implementations)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's fused inference path has no ONNX export; the plain path has
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _export(tower, example, input_name, output_name, path, custom_opsets, sequence_axis)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    _check_batches(tower, example, path, input_name)


def _export(
    tower: torch.nn.Module,
    example: torch.Tensor,
    input_name: str,
    output_name: str,
    path: Path,
    custom_opsets: dict[str, int] | None = None,
    sequence_axis: bool = False,
) -> None:
    axes = {0: "batch", 1: "sequence"} if sequence_axis else {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: axes, output_name: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            custom_opsets=custom_opsets,  # contrib operators (fused attention)
        )


def _check_batches(tower: torch.nn.Module, example: torch.Tensor, path: Path, name: str) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 7):
        reps = [batch] + [1] * (example.dim() - 1)
        x = example[:1].repeat(*reps)
        out = session.run(None, {name: x.numpy()})[0]
        with torch.no_grad():
            ref = tower(x).numpy()
        if out.shape != ref.shape or not np.allclose(out, ref, atol=1e-3, rtol=1e-3):
            raise ExportError(f"{path}: ONNX output differs from torch at batch {batch}")


# Ops kept in fp32 on top of onnxruntime's default list: normalisation and softmax reductions
# overflow or lose too much precision in half floats.
_FP32_OPS = ["LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Exp", "Erf"]


def convert_fp16(path: Path) -> None:
    """Half-precision weights and compute, float32 inputs and outputs (callers see no change)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = convert_float_to_float16(
        onnx.load(str(path)),
        keep_io_types=True,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + _FP32_OPS,
    )
    onnx.save(model, str(path))


def simplify(path: Path, example: torch.Tensor, tower: torch.nn.Module, input_name: str) -> None:
    """Constant folding and redundant-node removal with onnxslim, re-checked at several batch
    sizes against torch (a simplified graph must still be the same function)."""
    import onnx
    import onnxslim

    onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))
    _check_batches(tower, example, path, input_name)
