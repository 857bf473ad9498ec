"""Patch-embedding convolutions rewritten as matrix products (service/export/patchify.py):
the same function in onnxruntime, and only where the convolution is exactly a patchify."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.export.patchify import patch_convs_as_matmul


def _conv_graph(
    size: int = 12, kernel: int = 4, stride: int = 4, pads: int = 0, bias: bool = True
) -> Any:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 3, kernel, kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"))
        inputs.append("b")
    conv = helper.make_node(
        "Conv",
        inputs,
        ["y"],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[pads] * 4,
    )
    graph = helper.make_graph(
        [conv, helper.make_node("Relu", ["y"], ["out"])],
        "patch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8, "h", "w"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"x": x})[0]
    return out


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_patchify_conv_becomes_a_matmul_with_the_same_output(bias: bool, batch: int) -> None:
    model = _conv_graph(bias=bias)
    x = np.random.default_rng(1).standard_normal((batch, 3, 12, 12)).astype(np.float32)
    want = _run(model, x)
    assert patch_convs_as_matmul(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "Conv" not in ops and ops.count("MatMul") == 1
    assert {t.name for t in model.graph.initializer} >= {"patchify_0_weight"}
    assert "w" not in {t.name for t in model.graph.initializer}  # the kernel is not kept twice
    got = _run(model, x)
    assert got.shape == want.shape == (batch, 8, 3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 2},  # overlapping windows: a real convolution
        {"pads": 1},  # padded
        {"size": 10},  # the kernel does not divide the input
    ],
)
def test_other_convolutions_are_left_alone(kwargs: dict[str, int]) -> None:
    model = _conv_graph(**kwargs)
    assert patch_convs_as_matmul(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu"]
