"""What the parity report feeds both sides: the files and texts users really send.

Images are encoded files (real photographs shipped with scikit-image, in the colour modes,
bit depths, orientations and sizes clients upload); the source processor gets each file exactly
as `Image.open` returns it, our server the bytes. Texts cover the context length, scripts,
emoji, HTML entities and the odd whitespace and punctuation tokenizers clean differently.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageCase:
    name: str
    data: bytes
    # the deliberate deviation this case shows (None: ours must match the source)
    deviation: str | None = None
    # serve it with EXIF orientation applied (the server's default) or ignored
    exif_transpose: bool = True


# Deviations the image cases show, with why; `bound` is the cosine still required (None: none)
IMAGE_DEVIATIONS: dict[str, tuple[str, float | None]] = {
    "exif_orientation": (
        "served photos are turned upright by their EXIF orientation tag (server setting "
        "exif_transpose, on by default: phones store photos sideways with the tag and every "
        "viewer shows them upright); the source frameworks embed the stored, sideways pixels. "
        "With exif_transpose=false the same file matches (case exif_rotated_ignored)",
        None,
    ),
    "16bit_grayscale": (
        "16-bit grayscale is scaled from 0..65535 to 0..255; open_clip and transformers clip "
        "every value above 255 to white (an almost white image)",
        None,
    ),
    "jpeg_draft_decode": (
        "JPEGs at least 4x the model's input (and 512 px) are decoded by libjpeg at 1/2, 1/4 "
        "or 1/8 scale before the resize (4-16x faster); the source decodes every pixel",
        0.998,
    ),
}


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _photo(name: str) -> np.ndarray:
    import skimage.data

    arr = np.asarray(getattr(skimage.data, name)())
    return np.stack([arr] * 3, axis=-1) if arr.ndim == 2 else arr[..., :3]


@functools.cache
def image_cases() -> tuple[ImageCase, ...]:
    """Photos as PNG / JPEG, then one of each mode and oddity (18 files, made once)."""
    cases = []
    for name in PHOTOS:
        img = Image.fromarray(_photo(name))
        cases.append(ImageCase(f"{name}.png", _encode(img, "PNG")))
        cases.append(ImageCase(f"{name}.jpeg", _encode(img, "JPEG", quality=95)))
    coffee = _photo("coffee")
    height, width = coffee.shape[:2]
    # alpha: a transparent left third (its colour stays in the file), a ramp, an opaque rest
    alpha = np.clip(np.linspace(-255, 510, width), 0, 255).astype(np.uint8)
    rgba = np.dstack([coffee, np.broadcast_to(alpha, (height, width))])
    cases.append(ImageCase("rgba.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    camera = np.asarray(Image.fromarray(_photo("camera")).convert("L"))
    la = np.dstack([camera, np.broadcast_to(alpha[: camera.shape[1]], camera.shape)])
    cases.append(ImageCase("la.png", _encode(Image.fromarray(la, "LA"), "PNG")))
    cases.append(ImageCase("gray.png", _encode(Image.fromarray(camera, "L"), "PNG")))
    palette = Image.fromarray(_photo("chelsea")).quantize(64)
    cases.append(ImageCase("palette.png", _encode(palette, "PNG")))
    keyed = Image.fromarray(_photo("rocket")).quantize(32)
    cases.append(ImageCase("palette_transparent.png", _encode(keyed, "PNG", transparency=0)))
    cases.append(ImageCase("coffee.webp", _encode(Image.fromarray(coffee), "WEBP", quality=90)))
    astronaut = Image.fromarray(_photo("astronaut"))
    cmyk = astronaut.convert("CMYK")
    cases.append(ImageCase("cmyk.jpeg", _encode(cmyk, "JPEG", quality=95)))
    gray16 = (camera.astype(np.uint16) * 257).astype(np.uint16)
    cases.append(
        ImageCase("gray16.png", _encode(Image.fromarray(gray16), "PNG"), "16bit_grayscale")
    )
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored sideways: rotate 90 degrees clockwise to display
    stored = Image.fromarray(_photo("rocket")).transpose(Image.Transpose.ROTATE_90)
    rotated = _encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    cases.append(ImageCase("exif_rotated.jpeg", rotated, "exif_orientation"))
    cases.append(ImageCase("exif_rotated_ignored.jpeg", rotated, exif_transpose=False))
    cases.append(ImageCase("large.jpeg", _large_jpeg(), "jpeg_draft_decode"))
    return tuple(cases)


def photos() -> list[tuple[str, bytes]]:
    """(name, file) of the plain photographs as PNG and JPEG: real inputs for the checks that
    need no odd cases (fused graphs, int8 cosines)."""
    plain = {f"{name}.{ext}" for name in PHOTOS for ext in ("png", "jpeg")}
    return [(case.name, case.data) for case in image_cases() if case.name in plain]


def _large_jpeg() -> bytes:
    """A 2400 x 1800 photo mosaic with fine grain: libjpeg decodes it at 1/2 scale for models up
    to 224 px (at least 4x their input is kept), as it does 12 MP phone photos at 1/4."""
    tiles = [Image.fromarray(_photo(n)).resize((1200, 900)) for n in PHOTOS[:4]]
    mosaic = Image.new("RGB", (2400, 1800))
    for i, tile in enumerate(tiles):
        mosaic.paste(tile, ((i % 2) * 1200, (i // 2) * 900))
    grain = np.random.default_rng(0).integers(-12, 13, (1800, 2400, 1), dtype=np.int16)
    noisy = np.clip(np.asarray(mosaic, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    return _encode(Image.fromarray(noisy), "JPEG", quality=90)


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
]
TEXTS: dict[str, list[str]] = {
    "plain": SENTENCES,
    "long": [
        "the number 5 written in blue ink " * 6,
        " ".join(f"word{i} and some more words about photo number {i}" for i in range(40)),
    ],
    "non_ascii": [
        "café au lait and crème brûlée",
        "Ελληνικά: μια φωτογραφία μιας γάτας",
        "日本語の写真のキャプション",
        "Фотография кошки на столе",
        "cafe\u0301 with a decomposed accent",
        "naïve façade, déjà vu",
    ],
    "emoji": ["a cat 🐱 on a mat", "thumbs up 👍🏽", "a family 👨\u200d👩\u200d👧 photo", "🚀🚀🚀"],
    "html": [
        "fish &amp; chips",
        "&lt;b&gt;bold&lt;/b&gt; text",
        "&quot;quoted&quot;",
        "caf&eacute;",
    ],
    "odd": [
        "\uff26\uff35\uff2c\uff2c \uff57\uff49\uff44\uff54\uff48 letters",  # full width
        "the \ufb01rst \ufb02oor",  # ligatures
        "tabs\tand\nnew lines\r\n",
        "   padded   ",
        "",
        "snake_case_words and kebab-case",
        "Hello!!! (really?) #1 @user",
        "a\u2581b \u2581lead",
    ],
}


def text_cases() -> list[tuple[str, str]]:
    """(case name, text), e.g. ("html[1]", "&lt;b&gt;bold...")."""
    return [
        (f"{group}[{i}]", text) for group, texts in TEXTS.items() for i, text in enumerate(texts)
    ]
