"""Image bytes -> model pixels, exactly as the manifest's preprocessing says.

Two steps so the GPU path can stop half way: `prepare` decodes, orients, converts colour, resizes
and crops to a uint8 HWC array; `normalize` turns that into the float32 CHW tensor the tower takes.
Limits are checked on the header before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from service.jpeg_scans import count_scans
from service.manifest import ImagePreprocess

# We check pixel counts ourselves (with a clear error) before decoding; PIL's global guard is
# replaced by that check so its warning / exception never escapes as a 500.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
# JPEG draft decoding keeps at least this many source pixels per output pixel, and never goes
# below _DRAFT_MIN_SIDE, so the final resample stays close to a full decode. Measured against
# Hugging Face's processor on real photos: 2x left errors of up to 40 levels at 96 px; 4x from
# 512 px photos still moved a small trained model's embeddings to cosine 0.9996 at 32 px, so
# draft decoding is kept for the large photos where it pays (a 12 MP photo decodes 4-16x faster).
_DRAFT_OVERSAMPLE = 4
_DRAFT_MIN_SIDE = 512
# A progressive JPEG's decode work is scans x pixels (about 1.2 ms per scan and megapixel on a
# 2-core test machine): a file may take as many scans as fit in this many passes over the pixel
# limit (50 MP x 32 passes: ~2 s), besides the plain cap on scans.
JPEG_SCAN_PASSES = 32
# High-bit-depth images are converted in bands of about this many pixels, so no temporary is
# ever the size of the whole image.
_BAND_PIXELS = 1 << 20


class ImageError(ValueError):
    """A client's image cannot be used; `code` is the machine-readable error code."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str, int]]:
        # survives the trip back from a decode worker process
        return (ImageError, (self.code, str(self), self.status))


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_decode_s: float = 10.0
    max_jpeg_scans: int = 100


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Identify the image from its header and refuse what is too big before decoding it."""
    if not data:
        raise ImageError("empty_image", "image is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(
            "image_too_large", f"image has {len(data)} bytes, limit {limits.max_bytes}", 413
        )
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageError("invalid_image", "not a recognised image format") from exc
    except Exception as exc:  # PIL raises many types for broken headers
        raise ImageError("invalid_image", f"cannot read image header: {exc}") from exc
    if img.format not in ALLOWED_FORMATS:
        raise ImageError("unsupported_image_format", f"image format {img.format} not supported")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError("invalid_image", "image has no pixels")
    if width * height > limits.max_pixels:
        raise ImageError(
            "image_too_many_pixels",
            f"image is {width}x{height} = {width * height} pixels, limit {limits.max_pixels}",
            413,
        )
    if img.format in ("JPEG", "MPO"):
        _check_scans(data, width * height, limits)
    return img


def _check_scans(data: bytes, pixels: int, limits: ImageLimits) -> None:
    """Refuse a JPEG whose scans would take far longer to decode than its pixels suggest."""
    scans = count_scans(data, limits.max_jpeg_scans)
    if scans > limits.max_jpeg_scans:
        raise ImageError(
            "image_too_many_scans",
            f"JPEG has more than {limits.max_jpeg_scans} scans, limit {limits.max_jpeg_scans}",
        )
    allowed = limits.max_pixels * JPEG_SCAN_PASSES // pixels
    if scans > allowed:
        raise ImageError(
            "image_too_many_scans",
            f"JPEG has {scans} scans over {pixels} pixels, limit {allowed} scans at this size",
        )


def _draft(img: Image.Image, spec: ImagePreprocess) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result is still well above target."""
    if img.format not in ("JPEG", "MPO"):
        return
    width, height = img.size
    target = spec.resize_size or spec.size
    keep = max(_DRAFT_OVERSAMPLE * target, _DRAFT_MIN_SIDE)
    if spec.resize == "shortest":
        factor = keep / min(width, height)
        request = (math.ceil(width * factor), math.ceil(height * factor))
    else:
        request = (keep, keep)
    if request[0] < width and request[1] < height:
        img.draft("RGB", request)


def to_rgb(img: Image.Image, spec: ImagePreprocess) -> Image.Image:
    """Convert any mode to 8-bit RGB; transparency by the manifest's alpha rule, high bit depths
    scaled (where both source frameworks clip to white: a deliberate deviation)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_bit_depth_to_l(img).convert("RGB")
    if spec.alpha == "composite" and ("A" in img.getbands() or "transparency" in img.info):
        # transformers' convert_to_rgb: alpha-composite onto the background
        base = Image.new("RGBA", img.size, (*spec.background, 255))
        return Image.alpha_composite(base, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")  # "drop": the colour under transparent pixels stays


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float grey -> 8-bit grey: values scaled from 0..65535 (16-bit,
    or any larger value) or 0..255, rounded to nearest and clipped. Converted band by band, in
    integers where the source is integer (x / 257 never ends in .5, so `(x + 128) // 257` is the
    exact rounding), so memory stays near the 8-bit result instead of 8 bytes per pixel."""
    width, height = img.size
    peak = 65535 if img.mode.startswith("I;16") or img.getextrema()[1] > 255 else 255  # type: ignore[operator]
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _BAND_PIXELS // width)
    for top in range(0, height, rows):
        band = np.asarray(img.crop((0, top, width, min(top + rows, height))))
        if img.mode == "F":
            scaled = np.rint(band.astype(np.float64) * (255.0 / peak))
            out[top : top + rows] = np.clip(scaled, 0, 255)
        elif peak == 255:
            out[top : top + rows] = np.clip(band, 0, 255)
        else:
            out[top : top + rows] = (np.clip(band, 0, 65535).astype(np.uint32) + 128) // 257
    return Image.fromarray(out, "L")


def _resize_crop(img: Image.Image, spec: ImagePreprocess) -> Image.Image:
    resample = _RESAMPLE[spec.interpolation]
    size = spec.size
    if spec.resize == "squash":
        if img.size != (size, size):
            img = img.resize((size, size), resample)
        return img
    target = spec.resize_size or size
    width, height = img.size
    if width <= height:
        new = (target, int(target * height / width))
    else:
        new = (int(target * width / height), target)
    if new != img.size:
        img = img.resize(new, resample)
    if spec.crop == "none":
        return img
    width, height = img.size
    if width < size or height < size:  # crop larger than image: pad like torchvision does
        canvas = Image.new(img.mode, (max(width, size), max(height, size)))
        if img.mode == "P":
            canvas.putpalette(img.getpalette() or [])
        canvas.paste(img, ((canvas.width - width) // 2, (canvas.height - height) // 2))
        img = canvas
        width, height = img.size
    if spec.crop_offset == "round":
        left, top = round((width - size) / 2.0), round((height - size) / 2.0)
    else:
        left, top = (width - size) // 2, (height - size) // 2
    return img.crop((left, top, left + size, top + size))


def prepare(img: Image.Image, spec: ImagePreprocess, exif_transpose: bool = True) -> np.ndarray:
    """Decode, orient (EXIF, unless told not to), convert and resize/crop, in the order the
    manifest's `to_rgb` says: uint8 array of shape (size, size, 3)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.seek(0)  # first frame of animations
            _draft(img, spec)
            img.load()
            if exif_transpose:  # in place: without an orientation it would copy the image
                ImageOps.exif_transpose(img, in_place=True)
            if spec.to_rgb == "last":
                out = to_rgb(_resize_crop(img, spec), spec)
            else:
                out = _resize_crop(to_rgb(img, spec), spec)
    except ImageError:
        raise
    except Exception as exc:  # truncated data, corrupt streams, libjpeg/zlib errors
        raise ImageError("invalid_image", f"cannot decode image: {exc}") from exc
    return np.asarray(out, dtype=np.uint8)


class Normalizer:
    """uint8 HWC -> float32 CHW with (x/255 - mean) / std folded into one multiply-add."""

    def __init__(self, spec: ImagePreprocess) -> None:
        std = np.asarray(spec.std, dtype=np.float32)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._shift = (-np.asarray(spec.mean, dtype=np.float32) / std).astype(np.float32)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        out = pixels.astype(np.float32) * self._scale + self._shift
        return np.ascontiguousarray(out.transpose(2, 0, 1))


class ImagePreprocessor:
    """The whole pipeline for one encoded image: bytes -> the pixels the serving tower takes,
    float32 (3, size, size), or uint8 (size, size, 3) for a tower that normalises in its graph."""

    def __init__(
        self,
        spec: ImagePreprocess,
        limits: ImageLimits,
        raw: bool = False,
        exif_transpose: bool = True,
    ) -> None:
        self.spec = spec
        self.limits = limits
        self.raw = raw
        self.exif_transpose = exif_transpose
        self.normalize = Normalizer(spec)

    @property
    def input_dtype(self) -> Literal["uint8", "float32"]:
        return "uint8" if self.raw else "float32"

    def uint8(self, data: bytes) -> np.ndarray:
        return prepare(open_image(data, self.limits), self.spec, self.exif_transpose)

    def __call__(self, data: bytes) -> np.ndarray:
        return self.pixels(open_image(data, self.limits))

    def decoded_pixels(self, img: Image.Image) -> int:
        """How many pixels decoding `img` will produce: a JPEG is set to decode at reduced
        scale first (as `prepare` would; it does so once)."""
        _draft(img, self.spec)
        return img.width * img.height

    def pixels(self, img: Image.Image) -> np.ndarray:
        """An image from `open_image` (its header already checked) -> the tower's pixels."""
        pixels = prepare(img, self.spec, self.exif_transpose)
        return pixels if self.raw else self.normalize(pixels)
