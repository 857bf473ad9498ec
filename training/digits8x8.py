"""scikit-learn's 8x8 digits (1,797 scans at 16 grey levels, bundled with scikit-learn).

20% are held out; the model card measures them as served: an 8x8 black-on-white PNG that the
service scales up to the model's input size.
"""

from __future__ import annotations

import random
from functools import cache

import numpy as np
from PIL import Image

from training import mnist

HELD_OUT = 360


@cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 8, 8) uint8 ink 0-255, labels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    ink = np.round(data.images * (255 / 16)).astype(np.uint8)
    return ink, data.target.astype(int)


def split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, training) indices."""
    order = np.random.default_rng(seed).permutation(len(digits()[1]))
    return order[:HELD_OUT], order[HELD_OUT:]


def plain(ink: np.ndarray) -> Image.Image:
    """Black on white, 8x8, as a user would send the scan."""
    return Image.fromarray(255 - ink, "L").convert("RGB")


def augmented(ink: np.ndarray, rng: random.Random) -> Image.Image:
    """Scaled up on a larger canvas, placed at random, in random ink and paper colours."""
    side = rng.randint(16, 40)
    canvas = rng.randint(side, 48)
    resample = rng.choice([Image.Resampling.NEAREST, Image.Resampling.BILINEAR])
    mask = Image.new("L", (canvas, canvas), 0)
    mask.paste(
        Image.fromarray(ink, "L").resize((side, side), resample),
        (rng.randint(0, canvas - side), rng.randint(0, canvas - side)),
    )
    return mnist.ink_on_paper(mask, rng, swapped=0.3)
