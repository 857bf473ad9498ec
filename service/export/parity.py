"""Parity report: the source framework's own processor, tokenizer and embedding calls against
our serving pipeline (image bytes through `ImagePreprocessor`, texts through `TextTokenizer`,
onnxruntime), on the files and texts users send (`parity_inputs`). An export below the
thresholds fails unless forced. Deliberate deviations are measured and listed by name; they
count towards `passed` only where they carry a bound."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from service.export.parity_inputs import IMAGE_DEVIATIONS, ImageCase, image_cases, text_cases
from service.export.source import SourceModel
from service.imaging import ImageLimits, ImagePreprocessor
from service.manifest import Manifest
from service.runners.onnx import OrtOptions, OrtTowerRunner
from service.texts import TextTokenizer

THRESHOLDS = {"fp32": 0.9999, "fp16": 0.999}
# our pipeline vs the source processor, in normalised units (one 8-bit level is 0.008-0.015):
# exact decodes agree within a level
PIXEL_P99_TOLERANCE = 0.05
PIXEL_MEAN_TOLERANCE = 0.01


@dataclass
class TowerParity:
    items: int
    min_cosine: float
    mean_cosine: float


@dataclass
class Deviation:
    name: str
    reason: str
    cases: list[str]
    min_cosine: float
    bound: float | None = None  # the cosine still required; None: listed, not required

    @property
    def within_bound(self) -> bool:
        return self.bound is None or self.min_cosine >= self.bound


@dataclass
class ParityReport:
    precision: str
    threshold: float
    image: TowerParity
    text: TowerParity
    pixel_max_abs_diff: float
    pixel_p99_abs_diff: float
    pixel_mean_abs_diff: float
    token_ids_equal: bool
    passed: bool
    # the uint8-input variant of the image tower (normalising in its graph) against the source
    image_uint8: TowerParity | None = None
    text_call: str = "input_ids"
    # which token ids differ from the source tokenizer's, and the likely reason
    token_mismatches: list[str] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    # cosine per case, deviations included: {"image": {file: cos}, "text": {case: cos}}
    cases: dict[str, dict[str, float]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        u8 = self.image_uint8
        out = [
            f"parity ({self.precision}, threshold cosine >= {self.threshold}):",
            f"  image: {self.image.items} files, min cosine {self.image.min_cosine:.6f}, "
            f"mean {self.image.mean_cosine:.6f}",
            *(
                [
                    f"  image (uint8 input variant): min cosine {u8.min_cosine:.6f}, "
                    f"mean {u8.mean_cosine:.6f}"
                ]
                if u8
                else []
            ),
            f"  text:  {self.text.items} texts, min cosine {self.text.min_cosine:.6f}, "
            f"mean {self.text.mean_cosine:.6f} (source call: {self.text_call})",
            f"  pixels vs source processor: abs diff max {self.pixel_max_abs_diff:.4f}, "
            f"p99 {self.pixel_p99_abs_diff:.4f} (<= {PIXEL_P99_TOLERANCE}), "
            f"mean {self.pixel_mean_abs_diff:.5f} (<= {PIXEL_MEAN_TOLERANCE})",
            f"  token ids equal to source tokenizer: {self.token_ids_equal}",
            *(f"    {line}" for line in self.token_mismatches),
        ]
        if self.deviations:
            out.append("  deliberate deviations (not the source's behaviour):")
        for dev in self.deviations:
            bound = "" if dev.bound is None else f", required >= {dev.bound}"
            out.append(
                f"    {dev.name}: min cosine {dev.min_cosine:.4f}{bound} "
                f"({', '.join(dev.cases)}): {dev.reason}"
            )
        out.append(f"  => {'PASS' if self.passed else 'FAIL'}")
        return out

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _stats(cos: np.ndarray) -> TowerParity:
    return TowerParity(int(cos.size), float(cos.min()), float(cos.mean()))


def explain_token_mismatch(
    text: str, ours: np.ndarray, ref: np.ndarray, tokenizer: TextTokenizer
) -> str:
    """Which ids differ and the likely reason: padding side or id, truncation, tokenisation."""
    at = np.flatnonzero(ours != ref)
    shown = ", ".join(f"{i}: {ours[i]} vs {ref[i]}" for i in at[:4])
    head = f"{text[:40]!r}: positions {shown}{' ...' if at.size > 4 else ''} (ours vs source)"
    spec = tokenizer.spec
    if np.array_equal(np.sort(ours), np.sort(ref)):
        other = "left" if spec.padding_side == "right" else "right"
        return f"{head}: same ids, other places: the source pads on the {other}"
    _, mask = tokenizer.encode([text])
    if not mask[0][at].any():
        return f"{head}: the same text tokens, other padding ids (ours {spec.pad_id})"
    full = len(tokenizer.ids(text))
    if full > spec.context_length and at.min() >= spec.context_length - 2:
        return f"{head}: {full} tokens cut to {spec.context_length} differently (truncation)"
    first = int(at.min())
    pieces = (tokenizer.piece(int(ours[first])), tokenizer.piece(int(ref[first])))
    return (
        f"{head}: tokenisation differs from position {first} ({pieces[0]!r} vs {pieces[1]!r}): "
        f"text cleaning ({spec.clean}, lowercase={spec.lowercase}), normalisation or special "
        "tokens"
    )


def _image_parity(
    src: SourceModel,
    manifest: Manifest,
    model_dir: Path,
    opts: OrtOptions,
    cases: tuple[ImageCase, ...],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Cosines per graph (float tower, uint8 variant) and our-minus-source pixel differences."""
    assert manifest.image is not None
    ours = {
        flag: ImagePreprocessor(manifest.image, ImageLimits(), exif_transpose=flag)
        for flag in (True, False)
    }
    raw = np.stack([ours[c.exif_transpose].uint8(c.data) for c in cases])
    our_pixels = np.stack([ours[True].normalize(p) for p in raw])
    # the source processor gets each file as opened: its own mode, size and orientation
    ref_pixels = src.reference_pixels([Image.open(io.BytesIO(c.data)) for c in cases])
    with torch.no_grad():
        ref = src.reference_image(torch.from_numpy(ref_pixels)).numpy()
    spec = manifest.towers["image"]
    runner = OrtTowerRunner(spec.onnx_file(model_dir), spec, opts)
    cos = {"image": cosines(runner.run({spec.inputs[0].name: our_pixels}), ref)}
    if (variant := spec.uint8_variant) is not None:
        runner = OrtTowerRunner(variant.onnx_file(model_dir), variant, opts)
        cos["image_uint8"] = cosines(runner.run({variant.inputs[0].name: raw}), ref)
    return cos, np.abs(our_pixels - ref_pixels)


def _text_parity(
    src: SourceModel, manifest: Manifest, model_dir: Path, opts: OrtOptions, texts: list[str]
) -> tuple[np.ndarray, list[int], TextTokenizer, np.ndarray, np.ndarray]:
    """Cosines, rows whose ids differ, and both id arrays."""
    assert manifest.text is not None
    tokenizer = TextTokenizer(manifest.text, model_dir)
    ours_ids, ours_mask = tokenizer.encode(texts)
    ref_feeds = src.reference_tokens(texts)
    with torch.no_grad():
        ref = src.reference_text({k: torch.from_numpy(v) for k, v in ref_feeds.items()}).numpy()
    spec = manifest.towers["text"]
    runner = OrtTowerRunner(spec.onnx_file(model_dir), spec, opts)
    ours = runner.run({"input_ids": ours_ids, "attention_mask": ours_mask})
    ref_ids = ref_feeds["input_ids"]
    differ = [i for i in range(len(texts)) if not np.array_equal(ours_ids[i], ref_ids[i])]
    return cosines(ours, ref), differ, tokenizer, ours_ids, ref_ids


def measure(
    src: SourceModel, manifest: Manifest, model_dir: Path, opts: OrtOptions | None = None
) -> ParityReport:
    """`opts` picks the execution providers (CPU by default; CUDA on a GPU machine)."""
    precision = manifest.towers["image"].precision
    threshold = THRESHOLDS[precision]
    opts = opts or OrtOptions()
    images = image_cases()
    image_cos, pixel_diff = _image_parity(src, manifest, model_dir, opts, images)
    exact = np.array([c.deviation is None for c in images])
    diff = pixel_diff[exact]

    named = text_cases()
    known = [(dev, text) for dev in src.text_deviations for text in dev.texts]
    texts = [t for _, t in named] + [t for _, t in known]
    text_cos, differ, tokenizer, ours_ids, ref_ids = _text_parity(
        src, manifest, model_dir, opts, texts
    )
    plain = len(named)
    wrong = [i for i in differ if i < plain]
    mismatches = [
        explain_token_mismatch(texts[i], ours_ids[i], ref_ids[i], tokenizer) for i in wrong[:8]
    ]
    if len(wrong) > 8:
        mismatches.append(f"... and {len(wrong) - 8} more of {plain} texts")

    deviations = []
    for name, (reason, bound) in IMAGE_DEVIATIONS.items():
        hit = [i for i, c in enumerate(images) if c.deviation == name]
        if hit:
            worst = min(float(image_cos[g][i]) for g in image_cos for i in hit)
            deviations.append(Deviation(name, reason, [images[i].name for i in hit], worst, bound))
    for dev in src.text_deviations:
        hit = [plain + j for j, (d, _) in enumerate(known) if d is dev]
        same = sum(1 for i in hit if i not in differ)
        reason = f"{dev.reason} (token ids equal on {same} of {len(hit)} samples)"
        worst = float(min(text_cos[i] for i in hit))
        deviations.append(Deviation(dev.name, reason, [repr(texts[i]) for i in hit], worst))

    image = _stats(image_cos["image"][exact])
    image_uint8 = _stats(image_cos["image_uint8"][exact]) if "image_uint8" in image_cos else None
    text = _stats(text_cos[:plain])
    passed = (
        image.min_cosine >= threshold
        and (image_uint8 is None or image_uint8.min_cosine >= threshold)
        and text.min_cosine >= threshold
        and not mismatches
        and float(np.percentile(diff, 99)) <= PIXEL_P99_TOLERANCE
        and float(diff.mean()) <= PIXEL_MEAN_TOLERANCE
        and all(d.within_bound for d in deviations)
    )
    return ParityReport(
        precision=precision,
        threshold=threshold,
        image=image,
        text=text,
        pixel_max_abs_diff=float(diff.max()),
        pixel_p99_abs_diff=float(np.percentile(diff, 99)),
        pixel_mean_abs_diff=float(diff.mean()),
        token_ids_equal=not mismatches,
        passed=passed,
        image_uint8=image_uint8,
        text_call=src.text_call,
        token_mismatches=mismatches,
        deviations=deviations,
        cases={
            "image": {c.name: float(image_cos["image"][i]) for i, c in enumerate(images)},
            "text": {name: float(text_cos[i]) for i, (name, _) in enumerate(named)},
        },
    )
