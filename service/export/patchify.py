"""A ViT's patch embedding as a matrix product, so that int8 quantization reaches it.

The patch embedding is a convolution whose kernel equals its stride (32x32 pixels at stride 32
in ViT-B/32): each output position sees its own patch and no other, so it is one matrix product
of the flattened patches with the flattened kernel. onnxruntime's dynamic quantization turns
matrix products into integer GEMMs but leaves convolutions in float, and this convolution was a
third of the CPU time of the peers' int8 image tower (benchmarks/README.md). Rewritten, the
same graph quantizes it too; the int8 gate then judges the result like any other.

Only convolutions that are exactly patchify are rewritten: 2-D, one group, no dilation, no
padding, kernel == stride, and an input of known height and width that the kernel divides.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _patchify(node: Any, weights: dict[str, np.ndarray], shapes: dict[str, list[int]]) -> bool:
    attrs = _attrs(node)
    kernel = weights.get(node.input[1])
    shape = shapes.get(node.input[0])
    if kernel is None or kernel.ndim != 4 or shape is None or len(shape) != 4:
        return False
    kh, kw = kernel.shape[2:]
    height, width = shape[2:]
    pad = attrs.get("auto_pad", b"NOTSET")
    return (
        attrs.get("group", 1) == 1
        and list(attrs.get("dilations", [1, 1])) == [1, 1]
        and not any(attrs.get("pads", [0, 0, 0, 0]))
        and pad in (b"NOTSET", b"VALID", "NOTSET", "VALID")
        and list(attrs.get("strides", [1, 1])) == [kh, kw]
        and list(attrs.get("kernel_shape", [kh, kw])) == [kh, kw]
        and isinstance(height, int)
        and isinstance(width, int)
        and height > 0
        and width > 0
        and height % kh == 0
        and width % kw == 0
    )


def _known_shapes(model: Any) -> dict[str, list[int]]:
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    out: dict[str, list[int]] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        out[info.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return out


def patch_convs_as_matmul(model: Any) -> int:
    """Rewrite every patchify convolution of `model` (in place) as reshape -> transpose ->
    MatMul (+ bias) -> transpose -> reshape back to the convolution's output layout; returns
    how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    if not any(node.op_type == "Conv" for node in graph.node):
        return 0  # a text tower: no shape inference, no copy of the weights
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    shapes = _known_shapes(model)
    nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        if (
            node.op_type != "Conv"
            or node.domain not in ("", "ai.onnx")
            or not _patchify(node, weights, shapes)
        ):
            nodes.append(node)
            continue
        kernel = weights[node.input[1]]
        out_ch, in_ch, kh, kw = kernel.shape
        height, width = shapes[node.input[0]][2:]
        rows, cols = height // kh, width // kw
        name = f"patchify_{rewritten}"
        graph.initializer.extend(
            [
                numpy_helper.from_array(
                    np.ascontiguousarray(kernel.reshape(out_ch, -1).T), f"{name}_weight"
                ),
                numpy_helper.from_array(
                    np.array([-1, in_ch, rows, kh, cols, kw], np.int64), f"{name}_split"
                ),
                numpy_helper.from_array(
                    np.array([-1, rows * cols, in_ch * kh * kw], np.int64), f"{name}_flat"
                ),
                numpy_helper.from_array(
                    np.array([-1, out_ch, rows, cols], np.int64), f"{name}_grid"
                ),
            ]
        )
        product = f"{name}_product"
        nodes += [
            helper.make_node("Reshape", [node.input[0], f"{name}_split"], [f"{name}_split_out"]),
            helper.make_node(
                "Transpose", [f"{name}_split_out"], [f"{name}_patches"], perm=[0, 2, 4, 1, 3, 5]
            ),
            helper.make_node("Reshape", [f"{name}_patches", f"{name}_flat"], [f"{name}_rows"]),
            helper.make_node("MatMul", [f"{name}_rows", f"{name}_weight"], [product]),
        ]
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [f"{name}_biased"]))
            product = f"{name}_biased"
        nodes += [
            helper.make_node("Transpose", [product], [f"{name}_channels"], perm=[0, 2, 1]),
            helper.make_node("Reshape", [f"{name}_channels", f"{name}_grid"], [node.output[0]]),
        ]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {i for n in graph.node for i in n.input}
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return rewritten
