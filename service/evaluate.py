"""`clipserve eval DIR`: zero-shot accuracy and text->image retrieval on an ImageFolder tree
(one folder per class, the folder name is the label), measured through a running server."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.indexer import image_files


@dataclass
class EvalReport:
    images: int
    classes: int
    top1: float
    top5: float
    recall: dict[int, float] = field(default_factory=dict)
    precision: dict[int, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"{self.images} images, {self.classes} classes",
            f"zero-shot top-1 {self.top1:.4f}  top-5 {self.top5:.4f}  "
            f"(chance {1 / self.classes:.4f})",
        ]
        for k in sorted(self.recall):
            out.append(
                f"text->image recall@{k} {self.recall[k]:.4f}  precision@{k} "
                f"{self.precision[k]:.4f}"
            )
        return out


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(path, json=body, timeout=300)
    if r.status_code >= 400:
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:500]}")
    return dict(r.json())


def evaluate_folder(
    client: httpx.Client, root: Path, model: str | None = None, batch: int = 64
) -> EvalReport:
    files = list(image_files(root))
    if not files:
        raise RuntimeError(f"no images under {root}")
    classes = sorted({p.parent.name for p in files})
    truth = np.array([classes.index(p.parent.name) for p in files])
    top1 = top5 = 0
    vectors: list[list[float]] = []
    for start in range(0, len(files), batch):
        chunk = [base64.b64encode(p.read_bytes()).decode() for p in files[start : start + batch]]
        body: dict[str, Any] = {"images": chunk, "labels": classes, "top_k": 5}
        emb: dict[str, Any] = {"input": chunk, "modality": "image"}
        if model:
            body["model"] = emb["model"] = model
        results = _post(client, "/v1/classify", body)["results"]
        for k, ranked in enumerate(results):
            labels = [r["label"] for r in ranked]
            expected = classes[truth[start + k]]
            top1 += labels[0] == expected
            top5 += expected in labels
        vectors += [d["embedding"] for d in _post(client, "/v1/embeddings", emb)["data"]]
    images = np.asarray(vectors, dtype=np.float32)
    query: dict[str, Any] = {"input": [f"a photo of a {c}." for c in classes]}
    if model:
        query["model"] = model
    texts = np.asarray([d["embedding"] for d in _post(client, "/v1/embeddings", query)["data"]])
    order = np.argsort(-(texts @ images.T), axis=1)
    recall, precision = {}, {}
    for k in (1, 5, 10):
        hits = truth[order[:, :k]] == np.arange(len(classes))[:, None]
        recall[k] = float(np.mean(hits.any(axis=1)))  # a relevant image in the top k
        precision[k] = float(np.mean(hits.mean(axis=1)))
    n = len(files)
    return EvalReport(n, len(classes), top1 / n, top5 / n, recall, precision)
