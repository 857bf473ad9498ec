"""A small folder of pictures to try the default model on (the README's examples use it).

    python -m training.fetch_data && python -m training.samples samples
    # samples/emoji/<name>.png: 24 emoji in Twitter's style (Twemoji, CC-BY 4.0)
    # samples/shapes/<caption>.png: 16 drawn scenes, e.g. two-blue-stars.png

File names say what each picture shows (words joined by hyphens), so search results can be
checked at a glance.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from training import emoji, shapes

EMOJI = [
    "cat",
    "dog",
    "automobile",
    "red heart",
    "pizza",
    "rocket",
    "sun",
    "snowman",
    "house",
    "deciduous tree",
    "red apple",
    "banana",
    "fish",
    "bird",
    "butterfly",
    "guitar",
    "soccer ball",
    "bicycle",
    "airplane",
    "umbrella",
    "hot beverage",
    "grinning face",
    "crying face",
    "ghost",
]
SCENES: list[tuple[str, int, str | None, str | None]] = [
    # (colour shape, count, relation, other colour shape)
    ("red circle", 1, None, None),
    ("red circle", 2, None, None),
    ("blue star", 2, None, None),
    ("blue star", 3, None, None),
    ("green triangle", 1, None, None),
    ("yellow heart", 1, None, None),
    ("purple square", 4, None, None),
    ("black cross", 1, None, None),
    ("orange hexagon", 1, None, None),
    ("pink diamond", 2, None, None),
    ("red circle", 1, "left of", "green square"),
    ("green square", 1, "left of", "red circle"),
    ("blue circle", 1, "above", "yellow star"),
    ("yellow star", 1, "above", "blue circle"),
    ("purple heart", 1, "left of", "orange triangle"),
    ("black star", 1, "below", "red heart"),
]


def _thing(name: str) -> shapes.Thing:
    colour, shape = name.split()
    return shapes.Thing(colour, shape)


def write_samples(out: Path) -> list[Path]:
    """Writes the pictures; returns their paths."""
    written = []
    labels = {c.label: c for c in emoji.concepts()}
    (out / "emoji").mkdir(parents=True, exist_ok=True)
    for name in EMOJI:
        path = out / "emoji" / f"{name.replace(' ', '-')}.png"
        emoji.on_white(emoji.image_path(emoji.TEST_STYLE, labels[name].images[0])).save(path)
        written.append(path)
    (out / "shapes").mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for first, count, relation, second in SCENES:
        a = _thing(first)
        if relation and second:
            caption = f"{a.phrase()} {relation} {_thing(second).phrase()}"
            img = shapes.related(a, relation, _thing(second), rng)
        else:
            caption, img = a.phrase(count), shapes.counted(a, count, rng)
        path = out / "shapes" / f"{caption.replace(' ', '-')}.png"
        img.resize((128, 128)).save(path)
        written.append(path)
    return written


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "samples")
    print(f"{len(write_samples(folder))} pictures in {folder}")
