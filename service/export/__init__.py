"""Checkpoint -> model repository: ONNX towers, tokenizer, manifest, Triton configs, parity.

Needs the `export` extra (torch, transformers, open_clip); the serving code never imports this.
"""

from service.export.errors import ExportError
from service.export.pipeline import export_model

__all__ = ["ExportError", "export_model"]
