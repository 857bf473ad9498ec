"""`clipserve export`: load a source, write towers + tokenizer + configs + manifest, prove parity.

Everything is written to a temporary folder beside the target and moved into place only when
parity passes (or `force` records the failure), so a failed export never leaves half a model.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch

from service.export.errors import ExportError
from service.export.fusion import fuse_towers
from service.export.onnx_towers import OPSET, convert_fp16, export_tower, simplify
from service.export.parity import measure
from service.export.pixel_input import write_uint8_variant
from service.export.quantize import quantize_model
from service.export.source import SourceModel, parse_source
from service.export.triton_config import TritonOptions, write_config
from service.manifest import Manifest, TensorSpec, TowerSpec


def load_source(source: str) -> SourceModel:
    kind, ref = parse_source(source)
    if kind == "hf":
        from service.export.hf import load_hf

        return load_hf(ref)
    from service.export.openclip import load_open_clip

    return load_open_clip(ref)


def _versions() -> dict[str, str]:
    """Versions of what made this export (the source framework that is not installed is left
    out: open_clip is not needed to export a Hugging Face checkpoint)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"opset": str(OPSET)}
    for package in (
        "torch",
        "transformers",
        "open_clip_torch",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def build_manifest(src: SourceModel, name: str, precision: str) -> Manifest:
    size, ctx, dim = src.image.size, src.text.context_length, src.embedding_dim
    return Manifest(
        name=name,
        family=src.family,  # type: ignore[arg-type]
        embedding_dim=dim,
        towers={
            "image": TowerSpec(
                path="image",
                inputs=[
                    TensorSpec(name="pixel_values", dtype="float32", shape=[-1, 3, size, size])
                ],
                output=TensorSpec(name="image_embeds", dtype="float32", shape=[-1, dim]),
                precision=precision,  # type: ignore[arg-type]
            ),
            "text": TowerSpec(
                path="text",
                inputs=[TensorSpec(name="input_ids", dtype="int64", shape=[-1, ctx])],
                output=TensorSpec(name="text_embeds", dtype="float32", shape=[-1, dim]),
                precision=precision,  # type: ignore[arg-type]
            ),
        },
        image=src.image,
        text=src.text,
        scores=src.scores,
        source=src.source,
        export={
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
            "outputs": "projected embeddings before L2 normalisation (the runner normalises)",
        },
    )


def write_model(
    src: SourceModel,
    out: Path,
    name: str,
    fp16: bool,
    triton: TritonOptions,
    simplified: bool = True,
    uint8_variant: bool = True,
    fused: bool = True,
) -> Manifest:
    manifest = build_manifest(src, name, "fp16" if fp16 else "fp32")
    (out / "tokenizer.json").write_text(src.tokenizer_json)
    size = src.image.size
    image = manifest.towers["image"]
    text = manifest.towers["text"]
    pixels = torch.randn(2, 3, size, size)
    ids = torch.tensor(src.reference_tokens(["a photo", "two words here"]), dtype=torch.int64)
    for spec, tower, example in ((image, src.image_tower, pixels), (text, src.text_tower, ids)):
        name_in = spec.inputs[0].name
        export_tower(tower, example, name_in, spec.output.name, spec.onnx_file(out))
        if simplified:
            simplify(spec.onnx_file(out), example, tower, name_in)
    manifest.export["simplified"] = simplified
    if fused:
        manifest.export["fusions"] = fuse_towers(src, out, manifest, simplified)
    if fp16:
        for spec in (image, text):
            convert_fp16(spec.onnx_file(out))
    if uint8_variant:
        image.uint8_variant = write_uint8_variant(out, image, src.image)
    served = [image, text] + ([image.uint8_variant] if image.uint8_variant else [])
    for served_spec in served:
        write_config(
            served_spec.config_file(out),
            served_spec.path,
            served_spec.inputs,
            served_spec.output,
            triton,
        )
    return manifest


def export_model(
    source: str,
    out: Path,
    fp16: bool = False,
    force: bool = False,
    triton: TritonOptions | None = None,
    card: dict[str, object] | None = None,
    simplified: bool = True,
    uint8_variant: bool = True,
    fused: bool = True,
    quantize: str | None = None,
    eval_images: Path | None = None,
) -> Manifest:
    """`quantize="int8"` adds int8 towers, gated on `eval_images` (a labelled ImageFolder of
    held-out images; see service.export.quantize)."""
    if quantize is not None and eval_images is None:
        raise ExportError(
            f"--quantize {quantize} needs --eval-images: a folder of held-out images, one "
            "sub-folder per class (its name is the label), for the accuracy gate"
        )
    src = load_source(source)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        manifest = write_model(
            src,
            staging,
            out.name,
            fp16,
            triton or TritonOptions(),
            simplified,
            uint8_variant,
            fused,
        )
        manifest.write(staging)
        report = measure(src, manifest, staging)
        print("\n".join(report.lines()))
        manifest.parity = {**report.as_dict(), "forced": force and not report.passed}
        if card:
            manifest.card = dict(card)
        manifest.write(staging)
        if not report.passed and not force:
            raise ExportError("parity check failed:\n" + "\n".join(report.lines()))
        if quantize is not None and eval_images is not None:
            quantize_model(staging, manifest, eval_images, triton, force)
            manifest.write(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        return manifest
    finally:
        if staging.exists():
            shutil.rmtree(staging)
