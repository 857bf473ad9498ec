"""Procedural shapes and colours with compositional captions.

"a red circle", "three blue stars", "a green square left of a yellow heart". Eight colour+shape
pairs (one per shape, each in another colour) never appear in training in any caption or image:
the model card measures them, alone, counted and in pairs, so those numbers say whether the
model composes a colour it knows with a shape it knows rather than recalling a seen caption.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SIZE = 64
COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (135, 50, 180),
    "pink": (245, 130, 190),
    "brown": (130, 80, 35),
    "black": (20, 20, 20),
    "grey": (140, 140, 140),
}
SHAPES = ["circle", "square", "triangle", "star", "heart", "hexagon", "diamond", "cross"]
PLURAL = {"cross": "crosses"}
COUNTS = ["a", "two", "three", "four"]
RELATIONS = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}
# one pair per shape, each in another colour: every colour and shape is still seen elsewhere
HELD_OUT = tuple(
    f"{list(COLOURS)[(3 * s + 1) % len(COLOURS)]} {shape}" for s, shape in enumerate(SHAPES)
)


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def phrase(self, count: int = 1) -> str:
        if count == 1:
            return f"{'an' if self.colour[0] in 'aeiou' else 'a'} {self.name}"
        plural = PLURAL.get(self.shape, self.shape + "s")
        return f"{COUNTS[count - 1]} {self.colour} {plural}"


def things(held_out: bool) -> list[Thing]:
    every = [Thing(c, s) for s in SHAPES for c in COLOURS]
    return [t for t in every if (t.name in HELD_OUT) == held_out]


def _polygon(cx: float, cy: float, r: float, points: list[tuple[float, float]]) -> list[float]:
    return [v for x, y in points for v in (cx + r * x, cy + r * y)]


def _outline(shape: str, angle: float) -> list[tuple[float, float]]:
    """Unit-radius outline of a shape, turned by `angle` radians (none for a circle)."""
    if shape == "square":
        pts = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    elif shape == "triangle":
        pts = [
            (math.cos(a), math.sin(a))
            for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))
        ]
    elif shape == "star":
        pts = [
            (
                (1 if k % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (1 if k % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + k * math.pi / 5),
            )
            for k in range(10)
        ]
    elif shape == "hexagon":
        pts = [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]
    elif shape == "diamond":
        pts = [(0, -1), (0.65, 0), (0, 1), (-0.65, 0)]
    elif shape == "cross":
        a, b = 0.3, 0.9
        pts = [
            (-a, -b),
            (a, -b),
            (a, -a),
            (b, -a),
            (b, a),
            (a, a),
            (a, b),
            (-a, b),
            (-a, a),
            (-b, a),
            (-b, -a),
            (-a, -a),
        ]
    elif shape == "heart":
        pts = [
            (
                16 * math.sin(t) ** 3 / 17,
                -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
                / 17,
            )
            for t in (k * 2 * math.pi / 40 for k in range(40))
        ]
    else:
        raise ValueError(shape)
    c, s = math.cos(angle), math.sin(angle)
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


def draw(
    canvas: ImageDraw.ImageDraw, thing: Thing, cx: float, cy: float, r: float, rng: random.Random
) -> None:
    colour = tuple(max(0, min(255, v + rng.randint(-20, 20))) for v in COLOURS[thing.colour])
    if thing.shape == "circle":
        canvas.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        return
    tilt = rng.uniform(-0.25, 0.25) if thing.shape != "heart" else rng.uniform(-0.1, 0.1)
    canvas.polygon(_polygon(cx, cy, r, _outline(thing.shape, tilt)), fill=colour)


def _paper(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(235, 255), rng.randint(235, 255), rng.randint(235, 255))


def _spots(n: int, r: float, rng: random.Random) -> list[tuple[float, float]]:
    """n centres at least 2.1 r apart inside the canvas (rejection sampling, deterministic)."""
    for _ in range(200):
        spots = [
            (rng.uniform(r + 1, SIZE - r - 1), rng.uniform(r + 1, SIZE - r - 1)) for _ in range(n)
        ]
        if all(math.dist(a, b) > 2.1 * r for i, a in enumerate(spots) for b in spots[:i]):
            return spots
    return [(r + 1 + (SIZE - 2 * r - 2) * k / max(n - 1, 1), SIZE / 2) for k in range(n)]


def counted(thing: Thing, count: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), _paper(rng))
    canvas = ImageDraw.Draw(img)
    r = rng.uniform(9, 14) if count == 1 else rng.uniform(6, 9)
    for cx, cy in _spots(count, r, rng):
        draw(canvas, thing, cx, cy, r, rng)
    return img


def related(a: Thing, relation: str, b: Thing, rng: random.Random) -> Image.Image:
    """a <relation> b: the two centres apart along the relation's axis, roughly aligned on the
    other one."""
    img = Image.new("RGB", (SIZE, SIZE), _paper(rng))
    canvas = ImageDraw.Draw(img)
    r = rng.uniform(7, 10)
    dx, dy = RELATIONS[relation]
    gap = rng.uniform(2.3 * r, SIZE - 2 * r - 4)
    centre = (SIZE / 2 + rng.uniform(-4, 4), SIZE / 2 + rng.uniform(-4, 4))
    drift = rng.uniform(-0.25, 0.25) * gap
    ax = centre[0] + (dx * gap / 2 if dx else drift / 2)
    ay = centre[1] + (dy * gap / 2 if dy else drift / 2)
    bx = centre[0] - (dx * gap / 2 if dx else drift / 2)
    by = centre[1] - (dy * gap / 2 if dy else drift / 2)
    clamp = lambda v: min(max(v, r + 1), SIZE - r - 1)  # noqa: E731
    draw(canvas, a, clamp(ax), clamp(ay), r, rng)
    draw(canvas, b, clamp(bx), clamp(by), r, rng)
    return img


def training_sample(rng: random.Random) -> tuple[Image.Image, str, str]:
    """(image, caption, key): one thing counted, or two things and how they are placed. The key
    names what the image shows, so that captions of the same scene count as positives."""
    seen = things(held_out=False)
    kind = rng.random()
    if kind < 0.5:
        thing, count = rng.choice(seen), rng.choice([1, 1, 2, 3, 4])
        caption = thing.phrase(count)
        if count == 1 and rng.random() < 0.3:
            caption = rng.choice([thing.name, f"a {thing.shape}", f"something {thing.colour}"])
        return counted(thing, count, rng), caption, f"shape:{thing.name}:{count}"
    a, b = rng.sample(seen, 2)
    relation = rng.choice(list(RELATIONS))
    if kind < 0.65:
        return related(a, relation, b, rng), f"{a.phrase()} and {b.phrase()}", f"pair:{a}:{b}"
    caption = f"{a.phrase()} {relation} {b.phrase()}"
    return related(a, relation, b, rng), caption, f"rel:{a.name}:{relation}:{b.name}"
