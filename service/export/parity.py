"""Parity report: the source framework's preprocessing + torch model against our preprocessing +
onnxruntime, on real photos and sentences. An export below the thresholds fails unless forced."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from service.export.source import SourceModel
from service.imaging import ImageLimits, ImagePreprocessor
from service.manifest import Manifest
from service.runners.onnx import OrtOptions, OrtTowerRunner
from service.texts import TextTokenizer

THRESHOLDS = {"fp32": 0.9999, "fp16": 0.999}
# our pipeline vs the source processor, in normalised units (one 8-bit level is 0.008-0.015):
# exact decodes agree within a level; JPEG draft decoding of large photos moves a few edge
# pixels by several levels while the 99th percentile and the mean stay within about a level.
PIXEL_P99_TOLERANCE = 0.05
PIXEL_MEAN_TOLERANCE = 0.01

SENTENCES = [
    "a photo of a cat",
    "A photo of the number seven.",
    "an astronaut floating above the earth",
    "a cup of coffee on a table",
    "the digit 3",
    "two dogs playing in the snow at night",
    "a rocket on the launch pad",
    "Zero",
    "a handwritten nine",
    "a close-up photo of an orange cat's face",
    "a black and white photo of a man with a camera",
    "A RED CAR",
    "a painting of a sunflower field, in the style of van gogh",
    "fish & chips",
    "a diagram",
    "the number 5 written in blue ink " * 6,
]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


def photos() -> list[tuple[str, bytes]]:
    """Real photographs shipped with scikit-image, encoded as JPEG and PNG files."""
    import skimage.data

    out = []
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        img = Image.fromarray(arr)
        for fmt in ("PNG", "JPEG"):
            buf = io.BytesIO()
            img.save(buf, fmt, quality=95) if fmt == "JPEG" else img.save(buf, fmt)
            out.append((f"{name}.{fmt.lower()}", buf.getvalue()))
    return out


@dataclass
class TowerParity:
    items: int
    min_cosine: float
    mean_cosine: float


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

    def lines(self) -> list[str]:
        return [
            f"parity ({self.precision}, threshold cosine >= {self.threshold}):",
            f"  image: {self.image.items} items, min cosine {self.image.min_cosine:.6f}, "
            f"mean {self.image.mean_cosine:.6f}",
            f"  text:  {self.text.items} items, min cosine {self.text.min_cosine:.6f}, "
            f"mean {self.text.mean_cosine:.6f}",
            f"  pixels vs source processor: abs diff max {self.pixel_max_abs_diff:.4f}, "
            f"p99 {self.pixel_p99_abs_diff:.4f} (<= {PIXEL_P99_TOLERANCE}), "
            f"mean {self.pixel_mean_abs_diff:.5f} (<= {PIXEL_MEAN_TOLERANCE})",
            f"  token ids equal to source tokenizer: {self.token_ids_equal}",
            *(
                [
                    f"  image (uint8 input variant): min cosine {u8.min_cosine:.6f}, "
                    f"mean {u8.mean_cosine:.6f}"
                ]
                if (u8 := self.image_uint8)
                else []
            ),
            f"  => {'PASS' if self.passed else 'FAIL'}",
        ]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _stats(cos: np.ndarray) -> TowerParity:
    return TowerParity(int(cos.size), float(cos.min()), float(cos.mean()))


def measure(
    src: SourceModel, manifest: Manifest, model_dir: Path, opts: OrtOptions | None = None
) -> ParityReport:
    """`opts` picks the execution providers (CPU by default; CUDA on a GPU machine)."""
    precision = manifest.towers["image"].precision
    threshold = THRESHOLDS[precision]
    files = photos()
    assert manifest.image is not None and manifest.text is not None
    ours = ImagePreprocessor(manifest.image, ImageLimits())
    raw_pixels = np.stack([ours.uint8(data) for _, data in files])
    our_pixels = np.stack([ours.normalize(p) for p in raw_pixels])
    ref_pixels = src.reference_pixels(
        [Image.open(io.BytesIO(data)).convert("RGB") for _, data in files]
    )
    diff = np.abs(our_pixels - ref_pixels)
    opts = opts or OrtOptions()
    image_runner = OrtTowerRunner(
        manifest.towers["image"].onnx_file(model_dir), manifest.towers["image"], opts
    )
    text_runner = OrtTowerRunner(
        manifest.towers["text"].onnx_file(model_dir), manifest.towers["text"], opts
    )
    image_name = manifest.towers["image"].inputs[0].name
    with torch.no_grad():
        ref_img = src.reference_image(torch.from_numpy(ref_pixels)).numpy()
        ref_ids = src.reference_tokens(SENTENCES)
        ref_txt = src.reference_text(torch.from_numpy(ref_ids)).numpy()
    our_img = image_runner.run({image_name: our_pixels})
    tokenizer = TextTokenizer(manifest.text, model_dir)
    our_ids, our_mask = tokenizer.encode(SENTENCES)
    our_txt = text_runner.run({"input_ids": our_ids, "attention_mask": our_mask})
    image = _stats(_cosines(our_img, ref_img))
    text = _stats(_cosines(our_txt, ref_txt))
    image_uint8 = None
    if (variant := manifest.towers["image"].uint8_variant) is not None:
        runner = OrtTowerRunner(variant.onnx_file(model_dir), variant, opts)
        out = runner.run({variant.inputs[0].name: raw_pixels})
        image_uint8 = _stats(_cosines(out, ref_img))
    passed = (
        image.min_cosine >= threshold
        and (image_uint8 is None or image_uint8.min_cosine >= threshold)
        and text.min_cosine >= threshold
        and float(np.percentile(diff, 99)) <= PIXEL_P99_TOLERANCE
        and float(diff.mean()) <= PIXEL_MEAN_TOLERANCE
    )
    return ParityReport(
        precision=precision,
        threshold=threshold,
        image=image,
        text=text,
        pixel_max_abs_diff=float(diff.max()),
        pixel_p99_abs_diff=float(np.percentile(diff, 99)),
        pixel_mean_abs_diff=float(diff.mean()),
        token_ids_equal=bool(np.array_equal(our_ids, ref_ids)),
        passed=passed,
        image_uint8=image_uint8,
    )
