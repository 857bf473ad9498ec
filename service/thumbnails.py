"""Small JPEG thumbnails of upserted images, for collections created with `thumbnail_size`.

A thumbnail is kept in the point's own payload under a reserved key, so it is written by the
same upsert, deleted with the point and copied wherever Qdrant copies the point; no second store
exists to drift. The HTTP layer strips the key from every payload it returns and serves the
image from `GET .../points/{id}/thumbnail` instead, so search answers keep their size and shape.
The key has a colon, which no filter key may contain: filters cannot reach it.
"""

from __future__ import annotations

import base64
import io
import warnings
from typing import Any

from PIL import Image, ImageOps

from service.imaging import ImageError, ImagePreprocessor, open_image, to_rgb

THUMBNAIL_KEY = "clipserve:thumbnail"
MIN_SIDE, MAX_SIDE = 16, 256
QUALITY = 80


def make_thumbnail(data: bytes, side: int, pre: ImagePreprocessor) -> str:
    """The image shrunk to fit in side x side (never enlarged), as a base64 JPEG, upright and
    with transparency on white whatever the model's own rules. Called only on images the
    embedder has already decoded within the same limits, so it cannot meet a bomb."""
    img = open_image(data, pre.limits)
    on_white = pre.spec.model_copy(update={"alpha": "composite", "background": [255, 255, 255]})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.seek(0)
            img.draft("RGB", (side, side))  # JPEG: libjpeg decodes at 1/2..1/8 scale
            rgb = to_rgb(ImageOps.exif_transpose(img) or img, on_white)
            rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
    except Exception as exc:  # as in imaging.prepare: corrupt streams are the client's images
        raise ImageError("invalid_image", f"cannot decode image: {exc}") from exc
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=QUALITY, optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii")


def split_thumbnail(payload: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the user's payload, the thumbnail's base64 JPEG if any)."""
    if not payload or THUMBNAIL_KEY not in payload:
        return payload, None
    rest = dict(payload)
    thumbnail = rest.pop(THUMBNAIL_KEY)
    return rest, thumbnail if isinstance(thumbnail, str) else None
