"""scikit-image's sample photos (bundled with scikit-image), with captions we wrote.

They teach the words "photo", "microscope", "moon"... and little else: a handful of pictures
cannot teach real photos. Four everyday photos are held out to measure exactly that.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

CAPTIONS = {
    "astronaut": ["a photo of an astronaut", "an astronaut in a space suit"],
    "brick": ["a brick wall", "a photo of bricks"],
    "camera": ["a black and white photo of a man with a camera", "a photographer"],
    "cell": ["a microscope image of a cell"],
    "checkerboard": ["a checkerboard", "a black and white checkered pattern"],
    "clock": ["a photo of a clock", "a wall clock"],
    "coffee": ["a photo of a cup of coffee", "coffee"],
    "coins": ["a photo of coins", "old coins"],
    "colorwheel": ["a colour wheel", "a rainbow of colours in a circle"],
    "grass": ["a photo of grass"],
    "gravel": ["a photo of gravel", "small stones"],
    "horse": ["a silhouette of a horse"],
    "hubble_deep_field": ["galaxies in deep space", "a photo of the night sky"],
    "immunohistochemistry": ["stained tissue under a microscope"],
    "logo": ["the scikit-image logo"],
    "moon": ["the surface of the moon", "a photo of the moon"],
    "page": ["a page of printed text", "a scanned page"],
    "retina": ["a photo of a retina", "the back of an eye"],
    "rocket": ["a photo of a rocket", "a rocket on the launch pad"],
    "chelsea": ["a photo of a cat", "a cat"],
    "text": ["printed and handwritten text"],
}
# everyday objects whose names the emoji teach (cat, coffee, rocket, astronaut): held out
HELD_OUT = {
    "chelsea": "cat",
    "coffee": "hot beverage",
    "rocket": "rocket",
    "astronaut": "astronaut",
}


@cache
def photo(name: str) -> Image.Image:
    import skimage.data

    pixels = np.asarray(getattr(skimage.data, name)())
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 2:
        return Image.fromarray(pixels.astype(np.uint8), "L").convert("RGB")
    mode = "RGBA" if pixels.shape[2] == 4 else "RGB"
    return Image.fromarray(pixels.astype(np.uint8), mode).convert("RGB")


def training_names() -> list[str]:
    return [n for n in CAPTIONS if n not in HELD_OUT]
