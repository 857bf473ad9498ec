"""Test images made in memory with PIL: every format, mode and oddity the decoder must handle."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def blocks(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """Large flat colour blocks (few colours: exact in GIF's palette, stable under resizing)."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(6, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    index = (ys * 3 // height) * 2 + (xs * 2 // width)
    return Image.fromarray(palette[index], "RGB")


def noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def png_bomb(side: int = 20_000, bit_depth: int = 8) -> bytes:
    """A valid grayscale PNG of side x side black pixels, compressed to a few hundred KB (at 16
    bits and 7,000 px: 95 KB for 49 M pixels)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, bit_depth, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (side * bit_depth // 8 + 1)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def many_scan_jpeg(width: int, height: int, scans: int) -> bytes:
    """A valid progressive JPEG whose last scan is repeated until it has `scans` scans: each is
    a few bytes (a flat image's scans are all end-of-band runs) yet a pass over every block, so
    the file stays tiny and decodes for as long as the scans make it (libjpeg only warns about
    the repeated refinement)."""
    data = encode(Image.new("RGB", (width, height), (120, 80, 40)), "JPEG", progressive=True)
    last = data.rindex(b"\xff\xda")  # the last start-of-scan: only its entropy data follows
    base = data.count(b"\xff\xda")
    return data[:last] + data[last:-2] * (scans - base + 1) + b"\xff\xd9"
