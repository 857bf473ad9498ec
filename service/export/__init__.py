"""Checkpoint -> model repository: ONNX towers, tokenizer, manifest, Triton configs, parity.

Needs the `export` extra (torch, transformers, open_clip); the serving code never imports this.
`export_model` is imported on first use, so that the parts without torch (Triton configs,
errors) load on a serving install too (its tests render Triton configs).
"""

from typing import Any

from service.export.errors import ExportError

__all__ = ["ExportError", "export_model"]


def __getattr__(name: str) -> Any:
    if name == "export_model":
        from service.export.pipeline import export_model

        return export_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
