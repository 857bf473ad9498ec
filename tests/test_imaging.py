"""Image decoding and preprocessing: formats, orientation, colour modes, resize rules, limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.imaging import (
    ImageError,
    ImageLimits,
    ImagePreprocessor,
    Normalizer,
    _draft,
    open_image,
    prepare,
)
from service.manifest import ImagePreprocess
from tests.images import blocks, encode, noise, png_bomb

SPEC = ImagePreprocess(size=32, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
LIMITS = ImageLimits()


def pixels(data: bytes, spec: ImagePreprocess = SPEC) -> np.ndarray:
    return prepare(open_image(data, LIMITS), spec).astype(np.int16)


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("GIF", {}), ("WEBP", {"lossless": True})],
)
def test_lossless_formats_give_identical_pixels(fmt: str, kwargs: dict[str, object]) -> None:
    img = blocks()
    reference = pixels(encode(img, "PNG"))
    assert np.array_equal(pixels(encode(img, fmt, **kwargs)), reference)


def test_jpeg_and_lossy_webp_are_close() -> None:
    img = blocks()
    reference = pixels(encode(img, "PNG"))
    for data in (encode(img, "JPEG", quality=95), encode(img, "WEBP", quality=95)):
        assert np.abs(pixels(data) - reference).mean() < 3


def test_gif_uses_the_first_frame() -> None:
    first, second = blocks(seed=1), blocks(seed=2)
    data = encode(first, "GIF", save_all=True, append_images=[second])
    assert np.array_equal(pixels(data), pixels(encode(first, "PNG")))


def test_exif_orientation_is_applied() -> None:
    upright = blocks(64, 96, seed=3)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes for tag 6
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    reference = pixels(encode(upright, "PNG"))
    assert np.abs(pixels(data) - reference).mean() < 3
    # and without the tag the same pixels would be sideways
    assert np.abs(pixels(encode(stored, "JPEG", quality=95)) - reference).mean() > 20


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (40, 40), (10, 20, 30, 0))
    assert (pixels(encode(rgba, "PNG")) == 255).all()
    la = Image.new("LA", (40, 40), (0, 0))
    assert (pixels(encode(la, "PNG")) == 255).all()
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([0, 0, 0] * 256)
    assert (pixels(encode(pal, "PNG", transparency=0)) == 255).all()
    half = Image.new("RGBA", (40, 40), (0, 0, 0, 128))
    assert np.abs(pixels(encode(half, "PNG")) - 127).max() <= 1


def test_palette_and_grayscale_become_rgb() -> None:
    img = blocks()
    reference = pixels(encode(img, "PNG"))
    pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert np.array_equal(pixels(encode(pal, "PNG")), reference)
    gray = pixels(encode(img.convert("L"), "PNG"))
    assert gray.shape == (32, 32, 3) and (gray[..., 0] == gray[..., 2]).all()


def test_cmyk_jpeg_converts_back_to_rgb() -> None:
    img = blocks()
    data = encode(img.convert("CMYK"), "JPEG", quality=95)
    assert np.abs(pixels(data) - pixels(encode(img, "PNG"))).mean() < 4


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    arr = np.full((40, 40), 32896, dtype=np.uint16)  # 50% grey in 16 bits
    data = encode(Image.fromarray(arr), "PNG")
    assert open_image(data, LIMITS).mode.startswith("I")
    assert np.abs(pixels(data) - 128).max() <= 1


def test_shortest_side_resize_then_centre_crop() -> None:
    img = noise(100, 50, seed=4)
    expected = img.resize((64, 32), Image.Resampling.BICUBIC).crop((16, 0, 48, 32))
    assert np.array_equal(pixels(encode(img, "PNG")), np.asarray(expected, dtype=np.int16))


def test_squash_resize_ignores_aspect_ratio() -> None:
    spec = SPEC.model_copy(update={"resize": "squash", "interpolation": "bilinear"})
    img = noise(100, 50, seed=5)
    expected = img.resize((32, 32), Image.Resampling.BILINEAR)
    assert np.array_equal(pixels(encode(img, "PNG"), spec), np.asarray(expected, dtype=np.int16))


def test_crop_offset_rounding_modes() -> None:
    img = noise(35, 32, seed=6)  # 3 spare columns: torchvision rounds to 2, HF floors to 1
    data = encode(img, "PNG")
    arr = np.asarray(img, dtype=np.int16)
    assert np.array_equal(pixels(data), arr[:, 2:34])
    floor = SPEC.model_copy(update={"crop_offset": "floor"})
    assert np.array_equal(pixels(data, floor), arr[:, 1:33])


def test_jpeg_draft_decoding_stays_close_to_full_decode() -> None:
    img = blocks(4000, 3000, seed=7).resize((4000, 3000), Image.Resampling.BILINEAR)
    data = encode(img, "JPEG", quality=90)
    header = open_image(data, LIMITS)
    _draft(header, SPEC)
    assert header.size == (1000, 750)  # libjpeg decodes at 1/4 scale: >= 512 px kept
    full = Image.open(io.BytesIO(data))
    full.load()  # no draft: decode every pixel
    expected = prepare(full, SPEC).astype(np.int16)
    assert np.abs(pixels(data) - expected).mean() < 1.0


def test_small_jpegs_are_decoded_in_full() -> None:
    header = open_image(encode(blocks(900, 700), "JPEG"), LIMITS)
    _draft(header, SPEC)
    assert header.size == (900, 700)


def test_normalizer_matches_the_formula() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = Normalizer(SPEC)(arr)
    mean = np.array(SPEC.mean, dtype=np.float32)[:, None, None]
    std = np.array(SPEC.std, dtype=np.float32)[:, None, None]
    expected = (arr.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_decompression_bomb_is_refused_from_the_header() -> None:
    data = png_bomb()
    assert len(data) < 2_000_000
    with pytest.raises(ImageError) as err:
        ImagePreprocessor(SPEC, LIMITS)(data)
    assert err.value.code == "image_too_many_pixels" and err.value.status == 413


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_image"),
        (b"definitely not an image", "invalid_image"),
        (encode(blocks(), "JPEG")[:300], "invalid_image"),
        (encode(blocks(), "PNG")[:200], "invalid_image"),
        (encode(blocks(), "PPM"), "unsupported_image_format"),
    ],
)
def test_broken_images_raise_client_errors(data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as err:
        ImagePreprocessor(SPEC, LIMITS)(data)
    assert err.value.code == code and 400 <= err.value.status < 500


def test_byte_limit() -> None:
    with pytest.raises(ImageError) as err:
        open_image(encode(noise(64, 64, 1), "PNG"), ImageLimits(max_bytes=100))
    assert err.value.status == 413
