"""int8 towers for CPUs: dynamically quantized copies of the float towers, with their own report.

Dynamic quantization: weights become int8 once (per output channel), activations are quantized
per batch from their own range at run time. No calibration set can misjudge the inputs the
server will see, and the activation outliers of CLIP's transformer blocks (which make static
activation scales lose accuracy) are measured on every batch. The quantized operators are the
matrix products (MatMul, and the fused Attention node's QKV product) and the token embedding
table (Gather: int8 rows, dequantized after the lookup; it is most of a small text tower's
bytes, 12.6 of mini-clip's 13.4 MB). A ViT's patch embedding, a convolution whose kernel is its
stride, is rewritten as the matrix product it is first (`patchify.py`), so it is quantized too;
other convolutions, layer norms and softmax stay float. Integer GEMMs are what CPUs with VNNI /
AMX run fastest; GPUs have no use for these graphs (serve the float towers there).

The report compares the int8 towers against the float towers of the same export (which the
export's parity report has checked against the source model) on the parity photos and
sentences and on a labelled held-out image folder: embedding cosine per item, and the change in
zero-shot top-1 and text->image precision@k. Gate: median cosine >= 0.99 for both towers and
zero-shot top-1 within one point; otherwise the int8 towers are refused unless forced.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from service.evaluate import PRECISION_AT, class_queries, text_to_image
from service.export.errors import ExportError
from service.export.patchify import patch_convs_as_matmul
from service.export.pixel_input import write_uint8_variant
from service.export.triton_config import TritonOptions, write_config
from service.imaging import ImageLimits, ImagePreprocessor
from service.indexer import image_files
from service.manifest import Manifest, TowerSpec
from service.runners.onnx import OrtOptions, OrtTowerRunner
from service.texts import TextTokenizer

GATE_MEDIAN_COSINE = 0.99
GATE_TOP1_CHANGE = 0.01  # one point of zero-shot top-1
QUANTIZED_OPS = ["MatMul", "Attention", "Gather"]
_IN_MEMORY_BYTES = 1 << 30
DEFAULT_TEMPLATES = ["a photo of a {}."]


def quantize_graph(src: Path, dst: Path, patch: bool = True) -> int:
    """Returns how many patch-embedding convolutions went in as matrix products (none without
    `patch`, nor in a graph too large to rewrite in memory: protobuf's 2 GB)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.parent.mkdir(parents=True, exist_ok=True)
    graph_bytes = sum(f.stat().st_size for f in src.parent.iterdir() if f.is_file())
    model = onnx.load(str(src)) if patch and graph_bytes < _IN_MEMORY_BYTES else None
    patched = patch_convs_as_matmul(model) if model is not None else 0
    quantize_dynamic(
        model if model is not None else src,  # loaded once, rewritten or not
        dst,
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=QUANTIZED_OPS,
    )
    return patched


def int8_spec(tower: TowerSpec) -> TowerSpec:
    return TowerSpec(
        path=f"{tower.path}_int8",
        inputs=tower.inputs,
        output=tower.output,
        precision="int8",
        normalized=tower.normalized,
        trim_padding=tower.trim_padding,
    )


def write_int8_towers(
    model_dir: Path, manifest: Manifest, triton: TritonOptions, patch: bool = True
) -> int:
    """`<tower>_int8/` beside each float tower (and the image tower's uint8-input variant of
    it), with Triton configs for CPU instances; recorded as `int8_variant` in the manifest.
    Returns how many patch embeddings were quantized as matrix products."""
    cpu = dataclasses.replace(triton, instance_kind="KIND_CPU", tensorrt=False)
    patched = 0
    for name, tower in manifest.towers.items():
        spec = int8_spec(tower)
        patched += quantize_graph(tower.onnx_file(model_dir), spec.onnx_file(model_dir), patch)
        if name == "image" and tower.uint8_variant is not None and manifest.image is not None:
            spec.uint8_variant = write_uint8_variant(model_dir, spec, manifest.image)
        for graph in spec.graphs():
            write_config(graph.config_file(model_dir), graph.path, graph.inputs, graph.output, cpu)
        tower.int8_variant = spec
    return patched


@dataclass
class Cosines:
    items: int
    median: float
    min: float

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray) -> Cosines:
        cos = np.sum(_unit(a) * _unit(b), axis=1)
        return cls(int(cos.size), float(np.median(cos)), float(cos.min()))


@dataclass
class Change:
    """A metric through the float towers (`before`) and the int8 towers (`after`)."""

    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before


@dataclass
class Int8Report:
    method: str
    reference: str
    eval_folder: str
    eval_images: int
    classes: int
    image: Cosines
    text: Cosines
    zero_shot_top1: Change
    text_to_image: dict[str, Change] = field(default_factory=dict)
    image_uint8: Cosines | None = None
    patch_embeddings_as_matmul: int = 0
    passed: bool = False
    forced: bool = False

    def lines(self) -> list[str]:
        out = [
            f"int8 towers ({self.method}) against {self.reference}:",
            f"  image: {self.image.items} items, median cosine {self.image.median:.6f}, "
            f"min {self.image.min:.6f}",
            f"  text:  {self.text.items} items, median cosine {self.text.median:.6f}, "
            f"min {self.text.min:.6f}",
        ]
        if self.patch_embeddings_as_matmul:
            out.append(
                "  patch embeddings quantized as matrix products: "
                f"{self.patch_embeddings_as_matmul}"
            )
        if self.image_uint8 is not None:
            out.append(
                f"  image (uint8 input variant): median cosine {self.image_uint8.median:.6f}, "
                f"min {self.image_uint8.min:.6f}"
            )
        out.append(
            f"  held out ({self.eval_images} images, {self.classes} classes): zero-shot top-1 "
            f"{self.zero_shot_top1.before:.4f} -> {self.zero_shot_top1.after:.4f}"
        )
        for k, c in self.text_to_image.items():
            out.append(f"  text->image {k}: {c.before:.4f} -> {c.after:.4f}")
        out.append(
            f"  gate: median cosine >= {GATE_MEDIAN_COSINE}, zero-shot top-1 within "
            f"{GATE_TOP1_CHANGE * 100:.0f} point => {'PASS' if self.passed else 'FAIL'}"
        )
        return out

    def as_dict(self) -> dict[str, object]:
        found = asdict(self)
        for key, value in (("zero_shot_top1", self.zero_shot_top1), *self.text_to_image.items()):
            target = found if key == "zero_shot_top1" else found["text_to_image"]
            target[key]["change"] = round(value.change, 4)
        return found


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class _Towers:
    """One precision's runners for the report (float inputs, as the tower itself takes)."""

    image: OrtTowerRunner
    text: OrtTowerRunner
    tokenizer: TextTokenizer

    def images(self, pixels: np.ndarray) -> np.ndarray:
        name = self.image.spec.inputs[0].name
        return np.concatenate(
            [self.image.run({name: pixels[i : i + 64]}) for i in range(0, len(pixels), 64)]
        )

    def texts(self, texts: list[str]) -> np.ndarray:
        ids, mask = self.tokenizer.encode(texts)
        return self.text.run({"input_ids": ids, "attention_mask": mask})


def _labelled(folder: Path, pre: ImagePreprocessor) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files = list(image_files(folder))
    if not files:
        raise ExportError(f"no images under {folder} (an ImageFolder tree: <class>/<image>)")
    classes = sorted({p.parent.name for p in files})
    labels = np.array([classes.index(p.parent.name) for p in files])
    return np.stack([pre(p.read_bytes()) for p in files]), labels, classes


def _retrieval(
    towers: _Towers,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    templates: list[str],
) -> tuple[float, dict[int, float], np.ndarray]:
    """Zero-shot top-1 (class prototypes: mean of the template embeddings) and text->image
    precision@k as `clipserve eval` measures it (service.evaluate)."""
    texts, query_class = class_queries(classes, templates)
    queries = _unit(towers.texts(texts))
    prototypes = _unit(queries.reshape(len(classes), len(templates), -1).mean(axis=1))
    top1 = float(np.mean(np.argmax(images @ prototypes.T, axis=1) == labels))
    found = text_to_image(queries, query_class, images, labels)
    return top1, {k: found[f"precision_at_{k}"] for k in PRECISION_AT}, queries


def measure_int8(
    model_dir: Path, manifest: Manifest, eval_folder: Path, opts: OrtOptions | None = None
) -> Int8Report:
    from service.export.parity_inputs import SENTENCES, photos

    assert manifest.image is not None and manifest.text is not None
    opts = opts or OrtOptions()
    tokenizer = TextTokenizer(manifest.text, model_dir)

    def towers(int8: bool) -> _Towers:
        specs = []
        for name in ("image", "text"):
            spec = manifest.towers[name]
            if int8:
                assert spec.int8_variant is not None
                spec = spec.int8_variant
            specs.append(OrtTowerRunner(spec.onnx_file(model_dir), spec, opts))
        return _Towers(specs[0], specs[1], tokenizer)

    ref, q = towers(False), towers(True)
    pre = ImagePreprocessor(manifest.image, ImageLimits())
    pixels, labels, classes = _labelled(eval_folder, pre)
    photo_pixels = np.stack([pre(data) for _, data in photos()])
    all_pixels = np.concatenate([pixels, photo_pixels])
    ref_images, q_images = ref.images(all_pixels), q.images(all_pixels)
    templates = manifest.templates or DEFAULT_TEMPLATES
    n = len(labels)
    ref_top1, ref_at, ref_queries = _retrieval(
        ref, _unit(ref_images[:n]), labels, classes, templates
    )
    q_top1, q_at, q_queries = _retrieval(q, _unit(q_images[:n]), labels, classes, templates)
    text = Cosines.of(
        np.concatenate([q_queries, q.texts(SENTENCES)]),
        np.concatenate([ref_queries, ref.texts(SENTENCES)]),
    )
    image_uint8 = None
    variant = manifest.towers["image"].int8_variant
    if variant is not None and variant.uint8_variant is not None:
        raw = ImagePreprocessor(manifest.image, ImageLimits(), raw=True)
        uint8 = np.stack(
            [raw(p.read_bytes()) for p in image_files(eval_folder)]
            + [raw(data) for _, data in photos()]
        )
        runner = OrtTowerRunner(
            variant.uint8_variant.onnx_file(model_dir), variant.uint8_variant, opts
        )
        name = variant.uint8_variant.inputs[0].name
        out = np.concatenate(
            [runner.run({name: uint8[i : i + 64]}) for i in range(0, len(uint8), 64)]
        )
        image_uint8 = Cosines.of(out, ref_images)
    image = Cosines.of(q_images, ref_images)
    zero_shot = Change(ref_top1, q_top1)
    passed = (
        min(image.median, text.median, *([image_uint8.median] if image_uint8 else []))
        >= GATE_MEDIAN_COSINE
        and abs(zero_shot.change) <= GATE_TOP1_CHANGE + 1e-9
    )
    return Int8Report(
        method="onnxruntime dynamic quantization, int8 weights per channel "
        f"({', '.join(QUANTIZED_OPS)})",
        reference="the float towers of this export (checked against the source in `parity`)",
        eval_folder=str(eval_folder),
        eval_images=n,
        classes=len(classes),
        image=image,
        text=text,
        zero_shot_top1=zero_shot,
        text_to_image={f"precision_at_{k}": Change(ref_at[k], q_at[k]) for k in ref_at},
        image_uint8=image_uint8,
        passed=passed,
    )


def quantize_model(
    model_dir: Path,
    manifest: Manifest,
    eval_folder: Path,
    triton: TritonOptions | None = None,
    force: bool = False,
) -> Int8Report:
    """Write, measure and gate the int8 towers of a float export in `model_dir`. The manifest
    object (the caller writes it) gains the int8 variants and the report under
    `parity["int8"]`; a refused gate removes the int8 files again and raises."""
    if any(t.precision != "fp32" for t in manifest.towers.values()):
        raise ExportError("int8 towers are quantized from fp32 towers (export without --fp16)")
    triton = triton or TritonOptions()
    report = _write_and_measure(model_dir, manifest, eval_folder, triton, patch=True)
    if report.patch_embeddings_as_matmul and not report.passed:
        print("\n".join(report.lines()))  # the patch embedding kept in float may still pass
        report = _write_and_measure(model_dir, manifest, eval_folder, triton, patch=False)
    report.forced = force and not report.passed
    print("\n".join(report.lines()))
    if not report.passed and not force:
        for tower in manifest.towers.values():
            for graph in tower.int8_variant.graphs() if tower.int8_variant else []:
                shutil.rmtree(model_dir / graph.path, ignore_errors=True)
            tower.int8_variant = None
        raise ExportError(
            "int8 towers refused by the gate (--force keeps them):\n" + "\n".join(report.lines())
        )
    manifest.parity["int8"] = report.as_dict()
    return report


def _write_and_measure(
    model_dir: Path, manifest: Manifest, eval_folder: Path, triton: TritonOptions, patch: bool
) -> Int8Report:
    patched = write_int8_towers(model_dir, manifest, triton, patch)
    report = measure_int8(model_dir, manifest, eval_folder)
    report.patch_embeddings_as_matmul = patched
    return report
