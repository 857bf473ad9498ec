"""`clipserve export`: load a source, write towers + tokenizer + configs + manifest, prove parity.

Everything is written to a temporary folder beside the target and moved into place only when
parity passes (or `force` records the failure), so a failed export never leaves half a model.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from service.export.errors import ExportError
from service.export.fusion import TowerFusion
from service.export.onnx_towers import OPSET, TowerGraph, convert_fp16, export_tower, simplify
from service.export.parity import measure
from service.export.pixel_input import write_uint8_variant
from service.export.quantize import quantize_model
from service.export.source import SourceModel, parse_source
from service.export.triton_config import TritonOptions, write_config
from service.manifest import Manifest, TensorSpec, TowerSpec

# One rewrite of an exported tower graph, in place; each re-checks what it changes.
GraphStep = Callable[[TowerGraph], None]


def load_source(
    source: str, tokenizer_dir: Path | None = None, text_attention_mask: bool | None = None
) -> SourceModel:
    """`tokenizer_dir` stands in for the hub (open_clip configs naming a Hugging Face
    tokenizer); `text_attention_mask` overrides the family's trained text call (Hugging Face)."""
    kind, ref = parse_source(source)
    if kind == "hf":
        from service.export.hf import load_hf

        if tokenizer_dir is not None:
            raise ExportError("--tokenizer is for open_clip configs naming a hub tokenizer")

        return load_hf(ref, text_attention_mask)
    if text_attention_mask:
        raise ExportError("open_clip text towers take no attention mask")
    from service.export.openclip import load_open_clip

    return load_open_clip(ref, tokenizer_dir)


def graph_steps(
    fp16: bool, simplified: bool, fuse: GraphStep | None = None
) -> list[tuple[str, GraphStep]]:
    """What happens to each tower's graph after export, in order (new optimisation steps slot
    in here; the manifest records the names). `fuse` (fusion.TowerFusion) re-exports the
    simplified graph with fused operators; fp16 converts whichever graph was kept."""
    steps: list[tuple[str, GraphStep]] = []
    if simplified:
        steps.append(("simplify", simplify))
    if fuse is not None:
        steps.append(("fuse", fuse))
    if fp16:
        steps.append(("fp16", lambda graph: convert_fp16(graph.path)))
    return steps


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


def text_inputs(src: SourceModel) -> list[str]:
    return ["input_ids", "attention_mask"] if src.text.attention_mask else ["input_ids"]


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
                inputs=[
                    TensorSpec(name=name, dtype="int64", shape=[-1, ctx])
                    for name in text_inputs(src)
                ],
                output=TensorSpec(name="text_embeds", dtype="float32", shape=[-1, dim]),
                precision=precision,  # type: ignore[arg-type]
            ),
        },
        image=src.image,
        text=src.text,
        scores=src.scores,
        source={**src.source, "text_call": src.text_call},
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
    tokens = src.reference_tokens(["a photo", "two words here"])
    graphs = [
        TowerGraph(
            "image",
            src.image_tower,
            (torch.randn(2, 3, size, size),),
            [image.inputs[0].name],
            image.output.name,
            image.onnx_file(out),
        ),
        TowerGraph(
            "text",
            src.text_tower,
            tuple(torch.from_numpy(tokens[n]) for n in text_inputs(src)),
            text_inputs(src),
            text.output.name,
            text.onnx_file(out),
        ),
    ]
    fusion = TowerFusion(src, out, manifest, simplified) if fused else None
    steps = graph_steps(fp16, simplified, fusion)
    for graph in graphs:
        export_tower(graph)
        for _, step in steps:
            step(graph)
    manifest.export["simplified"] = simplified
    manifest.export["graph_steps"] = [step_name for step_name, _ in steps]
    if fusion is not None:
        manifest.export["fusions"] = fusion.reports
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
    tokenizer_dir: Path | None = None,
    text_attention_mask: bool | None = None,
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
    if quantize is not None and fp16:
        raise ExportError("int8 towers are quantized from fp32 towers: export without --fp16")
    src = load_source(source, tokenizer_dir, text_attention_mask)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # a unique folder beside `out`, renamed into place when complete; made with mkdir, not
    # mkdtemp, whose 0700 would stay on the model folder (unreadable to a container's user)
    staging = out.parent / f".{out.name}-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
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
