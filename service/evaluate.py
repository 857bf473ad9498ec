"""`clipserve eval DIR`: zero-shot accuracy and text->image retrieval on an ImageFolder tree
(one folder per class, the folder name is the label), measured through a running server.

Text->image retrieval is measured by `class_queries` and `text_to_image` below, which the model
cards (`training/card.py`, `training/train_mnist_clip.py`) and the int8 report
(`service/export/quantize.py`) use too, so a card and `clipserve eval` on the same images and
class names give the same numbers: one query per class and prompt template (the model's own
templates, as `/v1/classify` uses), relevant = the images of that class.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.indexer import find_images

PRECISION_AT = (1, 5, 10)
RETRIEVED = 5  # top images kept per text query for the report


def class_queries(classes: list[str], templates: list[str]) -> tuple[list[str], np.ndarray]:
    """One query text per class and template, and the class index of each."""
    from service.classify import prompts

    texts = [p for label in classes for p in prompts(label, templates)]
    return texts, np.repeat(np.arange(len(classes)), len(templates))


def ranking(queries: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Image indices by decreasing similarity, one row per query (unit-norm vectors)."""
    return np.argsort(-(queries @ images.T), axis=1, kind="stable")


def text_to_image(
    queries: np.ndarray,
    query_class: np.ndarray,
    images: np.ndarray,
    image_class: np.ndarray,
    order: np.ndarray | None = None,
) -> dict[str, Any]:
    """precision@k (share of the top k images that are of the query's class), recall@10 (any
    image of the query's class in the top 10: the figure where a class has one image; with many
    images per class it is nearly always 1) and mean average precision over the whole ranking,
    averaged over queries; vectors are unit norm. `order`: their `ranking`, when already made."""
    order = ranking(queries, images) if order is None else order
    hits = image_class[order] == query_class[:, None]
    ranks = np.arange(1, hits.shape[1] + 1)
    ap = (np.cumsum(hits, axis=1) / ranks * hits).sum(axis=1) / np.maximum(hits.sum(axis=1), 1)
    out: dict[str, Any] = {"queries": len(queries)}
    for k in PRECISION_AT:
        out[f"precision_at_{k}"] = round(float(hits[:, :k].mean()), 4)
    out["recall_at_10"] = round(float(hits[:, :10].any(axis=1).mean()), 4)
    out["mean_average_precision"] = round(float(ap.mean()), 4)
    return out


@dataclass
class EvalDetails:
    """What the summary numbers were computed from, for `clipserve eval --report`: the truth and
    the top-1 answer per image, and the top images of every text query."""

    classes: list[str]
    files: list[Path]
    truth: np.ndarray  # class index per image
    predicted: np.ndarray  # top-1 class index per image
    queries: list[str]
    query_class: np.ndarray  # class index per query
    retrieved: np.ndarray  # (queries, RETRIEVED) image indices, best first

    def per_class_accuracy(self) -> dict[str, float]:
        return {
            name: round(float(np.mean(self.predicted[self.truth == c] == c)), 4)
            for c, name in enumerate(self.classes)
        }

    def confusion(self) -> np.ndarray:
        """Counts: row = true class, column = the top-1 answer."""
        n = len(self.classes)
        counts = np.zeros((n, n), dtype=np.int64)
        np.add.at(counts, (self.truth, self.predicted), 1)
        return counts


@dataclass
class EvalReport:
    images: int
    classes: int
    top1: float
    top5: float
    text_to_image: dict[str, Any] = field(default_factory=dict)
    details: EvalDetails | None = field(default=None, repr=False)

    def lines(self) -> list[str]:
        t2i = self.text_to_image
        precision = "  ".join(f"precision@{k} {t2i[f'precision_at_{k}']:.4f}" for k in PRECISION_AT)
        return [
            f"{self.images} images, {self.classes} classes",
            f"zero-shot top-1 {self.top1:.4f}  top-5 {self.top5:.4f}  "
            f"(chance {1 / self.classes:.4f})",
            f"text->image ({t2i['queries']} queries: class x template) {precision}  "
            f"mAP {t2i['mean_average_precision']:.4f}",
        ]


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.url.path}: {response.status_code} {response.text}")
    return dict(response.json())


def image_classes(root: Path) -> tuple[list[Path], list[str], np.ndarray]:
    """(files, class names, class index per file) of an ImageFolder tree; images outside class
    folders, or a single class, would make every metric trivially 1.0: refused."""
    files = find_images(root)
    loose = [p.name for p in files if p.parent == root]
    if loose:
        raise RuntimeError(
            f"{root} holds images directly ({loose[0]}...): eval needs one sub-folder per "
            f"class, named for the class (e.g. {root / 'cat' / 'a.jpg'})"
        )
    top = [p.relative_to(root).parts[0] for p in files]
    classes = sorted(set(top))
    if len(classes) < 2:
        raise RuntimeError(
            f"{root} has one class folder ({classes[0]!r}): eval needs two or more, one per class"
        )
    return files, classes, np.array([classes.index(c) for c in top])


def evaluate_folder(
    client: httpx.Client, root: Path, model: str | None = None, batch: int = 64
) -> EvalReport:
    files, classes, truth = image_classes(root)
    top1 = top5 = 0
    predicted: list[int] = []
    vectors: list[list[float]] = []
    served = model
    for start in range(0, len(files), batch):
        chunk = [base64.b64encode(p.read_bytes()).decode() for p in files[start : start + batch]]
        body: dict[str, Any] = {"images": chunk, "labels": classes, "top_k": 5}
        emb: dict[str, Any] = {"input": chunk, "modality": "image"}
        if model:
            body["model"] = emb["model"] = model
        results = _check(client.post("/v1/classify", json=body))["results"]
        for k, ranked in enumerate(results):
            labels = [r["label"] for r in ranked]
            expected = classes[truth[start + k]]
            top1 += labels[0] == expected
            predicted.append(classes.index(labels[0]))
            top5 += expected in labels
        answer = _check(client.post("/v1/embeddings", json=emb))
        served = answer["model"]
        vectors += [d["embedding"] for d in answer["data"]]
    templates = _check(client.get(f"/v1/models/{served}"))["templates"]
    texts, query_class = class_queries(classes, templates)
    found: list[list[float]] = []
    for start in range(0, len(texts), batch):  # within the server's items per request
        query = {"input": texts[start : start + batch], "model": served}
        found += [d["embedding"] for d in _check(client.post("/v1/embeddings", json=query))["data"]]
    queries = np.asarray(found)
    images = np.asarray(vectors, dtype=np.float32)
    n = len(files)
    order = ranking(queries, images)
    details = EvalDetails(
        classes,
        files,
        truth,
        np.asarray(predicted),
        texts,
        query_class,
        order[:, :RETRIEVED],
    )
    return EvalReport(
        n,
        len(classes),
        top1 / n,
        top5 / n,
        text_to_image(queries, query_class, images, truth, order),
        details,
    )
