"""Zero-shot classification: prompt ensembles -> class prototypes -> scores by family rule.

CLIP-style models were trained with a softmax over a batch, so labels compete:
softmax(logit_scale * cos). SigLIP was trained with a per-pair sigmoid, so each label is scored
on its own: sigmoid(logit_scale * cos + logit_bias).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import numpy as np

from service.manifest import Manifest

# A short ensemble in the spirit of CLIP's zero-shot prompts: several framings of one concept,
# averaged, are more robust than any one of them.
DEFAULT_TEMPLATES = [
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a drawing of a {}.",
    "a blurry photo of a {}.",
    "art of the {}.",
]


def prompts(label: str, templates: list[str]) -> list[str]:
    return [t.format(label) if "{}" in t else f"{t} {label}" for t in templates]


class TextCache:
    """LRU of text embeddings per (model, text): repeated labels are not encoded again."""

    def __init__(self, capacity: int = 20_000) -> None:  # ~40 MB of 512-d vectors
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    async def embed(
        self, model: str, texts: list[str], encode: Callable[[list[str]], Awaitable[np.ndarray]]
    ) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if (model, t) not in self._items]
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if missing:
            for text, vec in zip(missing, await encode(missing), strict=True):
                self._items[(model, text)] = vec
        out = []
        for t in texts:
            self._items.move_to_end((model, t))
            out.append(self._items[(model, t)])
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return np.stack(out)


async def prototypes(
    model: str,
    labels: list[str],
    templates: list[str],
    cache: TextCache,
    encode: Callable[[list[str]], Awaitable[np.ndarray]],
) -> np.ndarray:
    """One unit vector per label: the normalised mean of its prompts' embeddings."""
    texts = [p for label in labels for p in prompts(label, templates)]
    emb = (await cache.embed(model, texts, encode)).reshape(len(labels), len(templates), -1)
    mean = emb.mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def scores(manifest: Manifest, images: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """(n_images, n_labels) scores by the model family's rule."""
    logits = manifest.scores.logit_scale * (images @ protos.T)
    if manifest.family == "siglip":
        return 1.0 / (1.0 + np.exp(-(logits + (manifest.scores.logit_bias or 0.0))))
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def top_k(labels: list[str], probs: np.ndarray, k: int) -> list[list[dict[str, object]]]:
    k = min(k, len(labels))
    out = []
    for row in probs:
        best = np.argpartition(-row, k - 1)[:k] if k < len(labels) else np.arange(len(labels))
        best = best[np.argsort(-row[best])]
        out.append([{"label": labels[i], "score": float(row[i])} for i in best])
    return out
