"""Emoji: about 1,900 named concepts drawn in two styles (Google's Noto and Twitter's Twemoji).

Names and keywords come from emojibase's English data (Unicode CLDR labels and keywords), the
images from emoji-datasource's 64 px PNGs, transparent, composited onto white as the service
does. A fixed 15% of the concepts are held out: training sees them only in Google's style, and
the model card measures them in Twitter's, so that score is recognition across a drawing style
never seen for that concept.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image

from training.fetch_data import npm_package

TRAIN_STYLE, TEST_STYLE = "google", "twitter"
HELD_OUT_PERCENT = 15


@dataclass(frozen=True)
class Concept:
    code: str  # emoji-datasource's "unified" code points, e.g. 1F436
    label: str  # CLDR short name, e.g. "dog face"
    keywords: tuple[str, ...]  # CLDR keywords and emoji-datasource short names
    images: tuple[str, ...]  # file names: the plain emoji first, then skin-tone variants

    @property
    def held_out(self) -> bool:
        """Stable under reordering: decided by a checksum of the code points alone."""
        return zlib.crc32(self.code.encode()) % 100 < HELD_OUT_PERCENT


def _plain(code: str) -> str:
    return code.upper().replace("-FE0F", "")


@cache
def concepts(root: Path | None = None) -> tuple[Concept, ...]:
    """Every emoji with an image in both styles, in emoji-datasource's sort order."""
    table = json.loads((npm_package("emoji-datasource-google", root) / "emoji.json").read_text())
    names = json.loads((npm_package("emojibase-data", root) / "en" / "data.json").read_text())
    cldr = {_plain(e["hexcode"]): e for e in names}
    found = []
    for e in sorted(table, key=lambda e: e["sort_order"]):
        if e["category"] == "Component" or not (e["has_img_google"] and e["has_img_twitter"]):
            continue
        entry = cldr.get(_plain(e["unified"]))
        label = entry["label"] if entry else e["name"].lower()
        words = [*(entry.get("tags", []) if entry else [])]
        words += [s.replace("_", " ").replace("-", " ") for s in e["short_names"]]
        keywords = tuple(dict.fromkeys(w.lower() for w in words if w.lower() != label.lower()))
        skins = [v["image"] for v in (e.get("skin_variations") or {}).values()]
        found.append(Concept(e["unified"], label, keywords, (e["image"], *skins)))
    labels = [c.label for c in found]
    assert len(set(labels)) == len(labels), "emoji labels must be unique"
    return tuple(found)


def image_path(style: str, name: str, root: Path | None = None) -> Path:
    return npm_package(f"emoji-datasource-{style}", root) / "img" / style / "64" / name


def on_white(path: Path) -> Image.Image:
    """A transparent PNG composited onto white, as the service composites it."""
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
