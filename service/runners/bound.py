"""Runs through onnxruntime I/O binding into buffers allocated once per batch-size bucket.

A batch is padded up to the nearest bucket (powers of two up to the largest batch), so every run
of a bucket reuses the same device buffers: no allocation per batch, one host-to-device copy of
the inputs and one device-to-host copy of the embeddings. Fixed addresses and shapes are also
what CUDA graphs need: with `cuda_graph`, each buffer set gets its own graph id, captured on its
first run and replayed after that.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.manifest import TowerSpec
from service.runners.base import NUMPY_DTYPES


def buckets_up_to(largest: int) -> tuple[int, ...]:
    sizes, size = [], 1
    while size < largest:
        sizes.append(size)
        size *= 2
    return (*sizes, largest)


@dataclass
class _Buffers:
    """Inputs and output of one bucket, on the device, and the CUDA graph id that uses them."""

    inputs: dict[str, Any]
    output: Any
    binding: Any
    graph_id: int


class BoundRunner:
    """`run(feeds)` for an InferenceSession, through preallocated per-bucket buffers."""

    def __init__(
        self,
        session: Any,
        spec: TowerSpec,
        device: str,
        buckets: tuple[int, ...],
        cuda_graph: bool,
    ) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.session, self.spec, self.device = session, spec, device
        self.buckets = buckets
        self.cuda_graph = cuda_graph
        # a buffer set is used by one batch at a time; concurrent batches take another one
        self._free: dict[int, queue.SimpleQueue[_Buffers]] = {
            b: queue.SimpleQueue() for b in buckets
        }
        self._graphs = 0
        self.proven = False  # a run has succeeded: later failures are real errors

    def _allocate(self, bucket: int) -> _Buffers:
        ort = self._ort
        binding = self.session.io_binding()
        inputs = {}
        for inp in self.spec.inputs:
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                [bucket, *inp.shape[1:]], NUMPY_DTYPES[inp.dtype], self.device, 0
            )
            binding.bind_ortvalue_input(inp.name, value)
            inputs[inp.name] = value
        out = self.spec.output
        output = ort.OrtValue.ortvalue_from_shape_and_type(
            [bucket, *out.shape[1:]], NUMPY_DTYPES[out.dtype], self.device, 0
        )
        binding.bind_ortvalue_output(out.name, output)
        self._graphs += 1
        return _Buffers(inputs, output, binding, self._graphs)

    def _run_bucket(self, feeds: dict[str, np.ndarray], n: int, bucket: int) -> np.ndarray:
        try:
            buffers = self._free[bucket].get_nowait()
        except queue.Empty:
            buffers = self._allocate(bucket)
        try:
            for name, arr in feeds.items():
                if n < bucket:  # pad with copies of the first row: real, finite inputs
                    pad = np.broadcast_to(arr[:1], (bucket - n, *arr.shape[1:]))
                    arr = np.concatenate([arr, pad])
                buffers.inputs[name].update_inplace(np.ascontiguousarray(arr))
            options = self._ort.RunOptions()
            if self.cuda_graph:
                options.add_run_config_entry("gpu_graph_id", str(buffers.graph_id))
            self.session.run_with_iobinding(buffers.binding, options)
            return np.array(buffers.output.numpy()[:n])
        finally:
            self._free[bucket].put(buffers)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(feeds.values())))
        largest = self.buckets[-1]
        if n > largest:  # more than any bucket: in chunks of the largest
            parts = [
                self.run({k: v[i : i + largest] for k, v in feeds.items()})
                for i in range(0, n, largest)
            ]
            return np.concatenate(parts)
        bucket = next(b for b in self.buckets if b >= n)
        return self._run_bucket(feeds, n, bucket)
