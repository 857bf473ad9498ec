"""A stand-in for Triton's ONNX Runtime backend, for tests on a machine without it.

The tritonserver in `nvidia-pytriton` has only the Python backend. Triton maps
`platform: "onnxruntime_onnx"` to the backend `onnxruntime`, and a backend directory holding a
`model.py` instead of `libtriton_onnxruntime.so` is a Python-based backend: so this file, installed
as `<backend dir>/onnxruntime/model.py`, lets the real server load our exported model folders with
their `config.pbtxt` untouched (dynamic batcher, instance groups and all) and run `1/model.onnx`
with the onnxruntime Python package. Like the real backend it refuses a config whose inputs or
outputs disagree with the ONNX graph, and runs each dynamic batch as one onnxruntime call.

Runs inside Triton's Python backend stub (the pytriton venv), not in the project's venv.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_ONNX_TYPES = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(uint8)": "TYPE_UINT8",
}


def _check(kind, config_tensors, onnx_tensors, batching):
    onnx = {t.name: t for t in onnx_tensors}
    for t in config_tensors:
        name = t["name"]
        if name not in onnx:
            raise pb_utils.TritonModelException(
                f"{kind} {name!r} of the config is not in the ONNX model ({sorted(onnx)})"
            )
        want = _ONNX_TYPES.get(onnx[name].type)
        if want != t["data_type"]:
            raise pb_utils.TritonModelException(
                f"{kind} {name!r}: config says {t['data_type']}, the ONNX model {onnx[name].type}"
            )
        shape = list(onnx[name].shape)
        if batching:
            shape = shape[1:]
        dims = [int(d) for d in t["dims"]]
        if len(dims) != len(shape) or any(
            isinstance(s, int) and d != -1 and s != d for s, d in zip(shape, dims, strict=True)
        ):
            raise pb_utils.TritonModelException(
                f"{kind} {name!r}: config dims {dims} do not fit the ONNX shape {onnx[name].shape}"
            )
    if kind == "input":
        missing = set(onnx) - {t["name"] for t in config_tensors}
        if missing:
            raise pb_utils.TritonModelException(f"ONNX inputs {sorted(missing)} not in the config")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        batching = int(config.get("max_batch_size", 0)) > 0
        _check("input", config["input"], self.session.get_inputs(), batching)
        _check("output", config["output"], self.session.get_outputs(), batching)
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        pb_utils.Logger.log_info(f"onnxruntime stand-in loaded {path}")

    def execute(self, requests):
        arrays = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
            for r in requests
        ]
        sizes = [a[self.inputs[0]].shape[0] for a in arrays]
        feeds = {n: np.concatenate([a[n] for a in arrays]) for n in self.inputs}
        results = self.session.run(self.outputs, feeds)
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(r[start : start + size]))
                for n, r in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
