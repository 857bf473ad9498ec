"""`clipserve eval --report DIR`: the evaluation as files a person can look at, beside its JSON.

eval.json       the summary numbers, per-class accuracy, the confusion counts, and every
                text query with its top images
confusion.png   true class against the top-1 answer
per_class.png   zero-shot accuracy per class
retrieval.png   text queries (the first template of each class) with their top images
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.evaluate import EvalReport


def report_json(report: EvalReport, root: Path) -> dict[str, Any]:
    d = report.details
    assert d is not None
    return {
        "images": report.images,
        "classes": d.classes,
        "zero_shot": {"top1": round(report.top1, 4), "top5": round(report.top5, 4)},
        "per_class_accuracy": d.per_class_accuracy(),
        "confusion": {
            "rows": "true class",
            "columns": "top-1 answer",
            "counts": d.confusion().tolist(),
        },
        "text_to_image": report.text_to_image,
        "retrieval": [
            {
                "query": text,
                "class": d.classes[int(d.query_class[q])],
                "top": [str(d.files[i].relative_to(root)) for i in d.retrieved[q]],
            }
            for q, text in enumerate(d.queries)
        ],
    }


def write_report(report: EvalReport, root: Path, out: Path) -> list[Path]:
    """The JSON and the three pictures in `out` (created); the paths written."""
    from service import plots

    d = report.details
    assert d is not None
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "eval.json"
    summary.write_text(json.dumps(report_json(report, root), indent=2))
    # one row per class, its first template's query: a readable strip (the JSON has them all)
    first = [next(q for q, c in enumerate(d.query_class) if c == k) for k in range(len(d.classes))]
    rows = first[: plots.STRIP_ROWS]
    shown = "" if len(rows) == len(first) else f", the first {len(rows)} of {len(first)} classes"
    return [
        summary,
        plots.confusion_matrix(d.classes, d.confusion(), out / "confusion.png"),
        plots.per_class_accuracy(d.per_class_accuracy(), out / "per_class.png"),
        plots.retrieval_strip(
            [d.queries[q] for q in rows],
            [[d.truth[i] == d.query_class[q] for i in d.retrieved[q]] for q in rows],
            [[d.files[i] for i in d.retrieved[q]] for q in rows],
            out / "retrieval.png",
            f"text -> image: top {d.retrieved.shape[1]} of {report.images} images "
            f"(green: of the query's class{shown})",
        ),
    ]
