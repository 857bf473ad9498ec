"""Digits and letters typed in fonts from Debian's font packages.

Whole font families are held out (Liberation, Comic Neue, Gentium, Quicksand): the model card's
"font digits" are those families' digits, black on white, in a design never seen in training.
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from training.fetch_data import font_files
from training.mnist import NAMES

HELD_OUT_FAMILIES = ("Liberation", "ComicNeue", "Gentium", "Quicksand")
SYMBOL_FONTS = ("D050000L", "StandardSymbolsPS", "DejaVuMathTeXGyre")  # no Latin glyphs
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@cache
def fonts(held_out: bool, root: Path | None = None) -> tuple[Path, ...]:
    found = [p for p in font_files(root) if not p.stem.startswith(SYMBOL_FONTS)]
    return tuple(p for p in found if p.stem.startswith(HELD_OUT_FAMILIES) == held_out)


@cache
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def glyph(
    char: str,
    path: Path,
    size: int = 64,
    ink: tuple[int, int, int] = (0, 0, 0),
    paper: tuple[int, int, int] = (255, 255, 255),
    scale: float = 0.7,
    offset: tuple[float, float] = (0.0, 0.0),
    angle: float = 0.0,
) -> Image.Image:
    """One character centred on a square canvas, its ink box `scale` of the side (shifted by a
    fraction of the side and rotated when augmenting)."""
    font = _font(path, max(8, int(size * scale * 1.3)))
    left, top, right, bottom = font.getbbox(char)
    w, h = right - left, bottom - top
    fit = scale * size / max(w, h, 1)
    if fit < 1:  # a glyph larger than the box (wide letters): shrink the font to fit
        font = _font(path, max(6, int(font.size * fit)))
        left, top, right, bottom = font.getbbox(char)
        w, h = right - left, bottom - top
    mask = Image.new("L", (size, size), 0)
    x = (size - w) / 2 - left + offset[0] * size
    y = (size - h) / 2 - top + offset[1] * size
    ImageDraw.Draw(mask).text((x, y), char, font=font, fill=255)
    if angle:
        mask = mask.rotate(angle, resample=Image.Resampling.BILINEAR)
    img = Image.new("RGB", (size, size), paper)
    img.paste(Image.new("RGB", (size, size), ink), mask=mask)
    return img


def augmented(char: str, rng: random.Random, path: Path) -> Image.Image:
    """A training rendering: random size, place, tilt, and ink/paper colours (either way round)."""
    ink = (rng.randint(0, 90), rng.randint(0, 90), rng.randint(0, 90))
    paper = (rng.randint(170, 255), rng.randint(170, 255), rng.randint(170, 255))
    if rng.random() < 0.3:
        ink, paper = paper, ink
    scale = rng.uniform(0.45, 0.85)
    room = (1 - scale) / 2
    offset = (rng.uniform(-room, room), rng.uniform(-room, room))
    return glyph(char, path, 64, ink, paper, scale, offset, rng.uniform(-8, 8))


def digit_name(char: str) -> str:
    return NAMES[int(char)]
