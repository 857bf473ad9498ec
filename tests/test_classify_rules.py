"""Zero-shot scores follow each family's rule; the text cache never re-encodes a prompt."""

from __future__ import annotations

import asyncio

import numpy as np

from service.classify import TextCache, prototypes, scores, top_k
from service.manifest import Manifest, Scores

EMB = np.eye(4, dtype=np.float32)[:2]  # two images
PROTOS = np.eye(4, dtype=np.float32)[:3]  # three labels


def manifest(family: str, scale: float, bias: float | None = None) -> Manifest:
    return Manifest.model_construct(
        family=family, scores=Scores(logit_scale=scale, logit_bias=bias)
    )


def test_clip_scores_are_a_softmax_over_labels() -> None:
    p = scores(manifest("clip", 100.0), EMB, PROTOS)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    expected = np.exp(100.0) / (np.exp(100.0) + 2)
    np.testing.assert_allclose(p[0, 0], expected, rtol=1e-6)


def test_siglip_scores_are_independent_sigmoids_with_bias() -> None:
    p = scores(manifest("siglip", 10.0, -5.0), EMB, PROTOS)
    np.testing.assert_allclose(
        p[0], [1 / (1 + np.exp(-5.0)), 1 / (1 + np.exp(5.0)), 1 / (1 + np.exp(5.0))]
    )
    assert not np.allclose(p.sum(axis=1), 1.0)


def test_top_k_is_sorted_and_bounded() -> None:
    probs = np.array([[0.1, 0.7, 0.2]])
    assert top_k(["a", "b", "c"], probs, 2) == [
        [{"label": "b", "score": 0.7}, {"label": "c", "score": 0.2}]
    ]
    assert len(top_k(["a", "b", "c"], probs, 10)[0]) == 3


def test_prototypes_average_templates_and_cache_hits() -> None:
    calls: list[list[str]] = []

    async def encode(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        rng = np.random.default_rng(len(texts))
        out = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    cache = TextCache()
    first = asyncio.run(prototypes("m", ["cat", "dog"], ["a {}", "the {}"], cache, encode))
    again = asyncio.run(prototypes("m", ["dog", "cat"], ["a {}", "the {}"], cache, encode))
    assert len(calls) == 1 and len(calls[0]) == 4
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(again[0], first[1])
    assert cache.hits == 4 and cache.misses == 4
