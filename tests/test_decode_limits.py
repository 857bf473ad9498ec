"""Decode work and memory are bounded before pixels are decoded: JPEG scans counted from the
markers, 16-bit images converted without float64 copies, a memory budget shared by the decode
threads."""

from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from service.embedder import DecodeMemory
from service.imaging import (
    ImageError,
    ImageLimits,
    ImagePreprocessor,
    _high_bit_depth_to_l,
    open_image,
)
from service.jpeg_scans import count_scans
from service.manifest import ImagePreprocess
from tests.images import encode, many_scan_jpeg, noise


def test_real_encoders_scans_pass_crafted_ones_are_refused_from_the_markers() -> None:
    photo = noise(640, 480, 1)
    assert count_scans(encode(photo, "JPEG"), 100) == 1
    assert count_scans(encode(photo, "JPEG", progressive=True), 100) == 10
    assert count_scans(encode(photo.convert("L"), "JPEG", progressive=True), 100) == 6
    open_image(encode(photo, "JPEG", progressive=True), ImageLimits())
    crafted = many_scan_jpeg(1000, 1000, 3000)  # 3,000 scans in ~30 KB: ~4 s to decode here
    started = time.perf_counter()
    with pytest.raises(ImageError) as err:
        open_image(crafted, ImageLimits())
    assert err.value.code == "image_too_many_scans" and err.value.status == 422
    assert time.perf_counter() - started < 0.5  # refused from the markers, nothing decoded


def test_markers_are_walked_not_searched() -> None:
    """Segment payloads (EXIF, comments) and entropy-coded data may hold the bytes of a
    start-of-scan marker; only real markers count. Restart markers do not end a scan."""
    photo = noise(320, 240, 2)
    exif = b"Exif\x00\x00" + b"\xff\xda" * 200
    assert count_scans(encode(photo, "JPEG", progressive=True, exif=exif), 1000) == 10
    assert count_scans(encode(photo, "JPEG", restart_marker_blocks=1), 1000) == 1
    crafted = many_scan_jpeg(64, 64, 500)
    assert count_scans(crafted, 1000) == 500
    assert count_scans(crafted, 20) == 21  # stops counting past the limit


def test_scans_are_budgeted_against_pixels() -> None:
    """A scan is a pass over every block: large images get fewer of them."""
    image = many_scan_jpeg(800, 800, 60)  # 0.64 MP
    open_image(image, ImageLimits())
    with pytest.raises(ImageError) as err:
        open_image(image, ImageLimits(max_pixels=1_000_000))  # 32 passes over 1 MP: 50 scans
    assert err.value.code == "image_too_many_scans"
    assert "limit 50 scans" in str(err.value)


def _float_reference(img: Image.Image) -> np.ndarray:
    """The conversion as it was: float64 over the whole image."""
    arr = np.asarray(img, dtype=np.float64)
    peak = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
    return np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)


def _modes() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    every16 = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    return [
        Image.fromarray(every16),  # I;16, every value once
        Image.frombytes("I;16B", (256, 256), every16.astype(">u2").tobytes()),
        Image.fromarray(rng.integers(-1000, 100_000, (99, 301)).astype(np.int32), "I"),
        Image.fromarray(rng.integers(-5, 250, (99, 301)).astype(np.int32), "I"),
        Image.fromarray((rng.random((50, 70)) * 70_000 - 20).astype(np.float32), "F"),
    ]


@pytest.mark.parametrize("img", _modes(), ids=lambda img: img.mode)
def test_high_bit_depth_conversion_rounds_exactly_as_before(img: Image.Image) -> None:
    converted = _high_bit_depth_to_l(img)
    assert converted.mode == "L"
    assert np.array_equal(np.asarray(converted), _float_reference(img))


def test_high_bit_depth_conversion_never_copies_the_image_to_float64() -> None:
    side = 3000  # 9 M pixels: a float64 copy alone is 72 MB
    img = Image.new("I;16", (side, side), 40_000)
    tracemalloc.start()
    try:
        out = _high_bit_depth_to_l(img)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.asarray(out)[0, 0] == round(40_000 / 257)
    assert peak < 3 * side * side, f"{peak / 2**20:.0f} MiB"  # the uint8 result + bands


def test_decode_memory_is_shared_and_an_oversize_image_refused() -> None:
    budget = DecodeMemory(100)
    with pytest.raises(ImageError) as err, budget.hold(101):
        pass
    assert err.value.code == "image_too_large_to_decode" and err.value.status == 413
    entered = threading.Event()

    def second() -> None:
        with budget.hold(70):
            entered.set()

    with budget.hold(70):
        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.3)  # waits while the first image holds 70 of 100
    assert entered.wait(5)
    thread.join()


def test_memory_is_reserved_for_what_the_decoder_produces() -> None:
    """A large JPEG decodes at reduced scale (draft): its reservation is for those pixels, so
    phone photos do not queue behind each other for memory they never use."""
    spec = ImagePreprocess(size=224, mean=[0.5] * 3, std=[0.5] * 3)
    pre = ImagePreprocessor(spec, ImageLimits())
    photo = encode(noise(4000, 3000, 3), "JPEG")
    img = open_image(photo, pre.limits)
    assert pre.decoded_pixels(img) == 2000 * 1500  # 1/2 scale: still >= 4x the 224 px target
    assert np.array_equal(pre.pixels(img), pre(photo))
    png = open_image(encode(noise(400, 300, 4), "PNG"), pre.limits)
    assert pre.decoded_pixels(png) == 400 * 300
