"""Colour modes as each source framework really treats them: our decoder with the manifest's
alpha / to_rgb rules against open_clip's transform and transformers' image processors, fed the
files exactly as `Image.open` returns them (no convert("RGB") first)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.imaging import ImageLimits, ImagePreprocessor
from service.manifest import ImagePreprocess
from tests.images import encode, noise

pytestmark = pytest.mark.export

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
OPEN_CLIP = ImagePreprocess(size=32, mean=MEAN, std=STD, alpha="drop", to_rgb="last")
HF = ImagePreprocess(size=32, mean=MEAN, std=STD, crop_offset="floor")  # composite, decode


def _files() -> dict[str, bytes]:
    rgb = np.asarray(noise(90, 70, seed=1))
    alpha = np.tile(np.linspace(-255, 510, 90).clip(0, 255).astype(np.uint8), (70, 1))
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")  # a third fully transparent
    gray = Image.fromarray(rgb[..., 0], "L")
    palette = Image.fromarray(rgb).quantize(48)
    return {
        "rgba": encode(rgba, "PNG"),
        "la": encode(Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"), "PNG"),
        "palette": encode(palette, "PNG"),
        "palette_transparent": encode(palette, "PNG", transparency=3),
        "gray": encode(gray, "PNG"),
        "bilevel": encode(gray.convert("1"), "PNG"),
        "cmyk": encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95),
    }


FILES = _files()


def _ours(spec: ImagePreprocess, data: bytes) -> np.ndarray:
    return ImagePreprocessor(spec, ImageLimits())(data)


@pytest.mark.parametrize("name", sorted(FILES))
def test_open_clip_rules_match_open_clip_transform(name: str) -> None:
    """open_clip resizes and crops in the file's mode (palette and 1-bit with NEAREST, RGBA
    premultiplied), then convert("RGB") drops alpha: the same pixels, to the last bit."""
    from open_clip.transform import image_transform

    transform = image_transform(32, is_train=False, mean=MEAN, std=STD)
    expected = transform(Image.open(io.BytesIO(FILES[name]))).numpy()
    np.testing.assert_allclose(_ours(OPEN_CLIP, FILES[name]), expected, atol=1e-5)


def test_open_clip_keeps_the_colour_under_transparent_pixels() -> None:
    """Compositing onto white (the old rule for every model) is not what open_clip embeds."""
    from open_clip.transform import image_transform

    transform = image_transform(32, is_train=False, mean=MEAN, std=STD)
    rgba = Image.new("RGBA", (32, 32), (200, 30, 40, 0))  # red, fully transparent, no resize
    expected = transform(Image.open(io.BytesIO(encode(rgba, "PNG")))).numpy()
    ours = _ours(OPEN_CLIP, encode(rgba, "PNG"))
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    white = _ours(HF, encode(rgba, "PNG"))
    assert np.abs(white - expected).max() > 1.0


@pytest.mark.parametrize("name", sorted(FILES))
def test_hf_rules_match_transformers_processors(name: str) -> None:
    """transformers' convert_to_rgb alpha-composites onto white before resizing (a palette
    image's transparency key too); both its backends agree with ours within one level."""
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=MEAN,
        image_std=STD,
    )
    expected = processor(images=[Image.open(io.BytesIO(FILES[name]))], return_tensors="np")
    level = 1.0 / (255 * min(STD))
    diff = np.abs(_ours(HF, FILES[name]) - expected["pixel_values"][0])
    assert diff.max() <= 1.01 * level and diff.mean() <= 0.05 * level


def test_exif_orientation_is_a_setting() -> None:
    """On by default (photos upright, as viewers show them); off reproduces the source
    frameworks, which embed the stored pixels."""
    stored = noise(60, 40, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "PNG", exif=exif.tobytes())
    upright = encode(stored.transpose(Image.Transpose.ROTATE_270), "PNG")
    as_stored = encode(stored, "PNG")
    rotate = ImagePreprocessor(HF, ImageLimits())
    keep = ImagePreprocessor(HF, ImageLimits(), exif_transpose=False)
    assert np.array_equal(rotate(data), rotate(upright))
    assert np.array_equal(keep(data), keep(as_stored))
    assert not np.array_equal(rotate(data), keep(data))
