"""Synthetic scenes: coloured shapes on a plain background, with exact ground truth for every task.

A scene holds 1-6 shapes of four kinds, five colours and two sizes, drawn in order (later shapes may cover
earlier ones). Ground truth is taken from what is visible: each instance mask is the shape's visible pixels and
its box the box of that mask. Every shape has five named keypoints (top, bottom, left, right, centre). Scenes
are a pure function of `(seed, index)`.
"""

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 50, 180),
}
SIZES = {"small": (0.14, 0.2), "large": (0.26, 0.34)}  # side as a fraction of the image
KEYPOINTS = ("top", "bottom", "left", "right", "centre")
BACKGROUND = (200, 200, 200)
# Kinds the demo model never saw, with keypoint sets of their own (3, 7 and none): "your data" in tests and benches
FOREIGN_KEYPOINTS = {
    "arrow": ("tip", "tail_left", "tail_right"),
    "hexagon": ("vertex_1", "vertex_2", "vertex_3", "vertex_4", "vertex_5", "vertex_6", "middle"),
    "cross": (),
}
FOREIGN_KINDS = tuple(FOREIGN_KEYPOINTS)


@dataclass
class Shape:
    kind: str
    colour: str
    size: str
    centre: tuple[float, float]
    radius: float  # half the side of the shape's bounding square
    mask: np.ndarray | None = None  # visible pixels, filled in by `render`

    @property
    def name(self) -> str:
        return f"{self.size} {self.colour} {self.kind}"

    def polygon(self) -> list[tuple[float, float]]:
        x, y, r = *self.centre, self.radius
        if self.kind in FOREIGN_KINDS:
            return _foreign_polygon(self.kind, x, y, r)
        if self.kind == "square":
            return [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]
        if self.kind == "triangle":
            return [(x, y - r), (x + r, y + r), (x - r, y + r)]
        if self.kind == "diamond":
            return [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]
        return [(x + r * math.cos(a), y + r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 48, endpoint=False)]

    def keypoints(self) -> list[tuple[float, float]]:
        """Pixel (x, y) of top, bottom, left, right and centre (a foreign kind's own keypoints for those)."""
        x, y, r = *self.centre, self.radius
        if self.kind == "arrow":  # tip, tail_left, tail_right
            tip, tail_left, _, tail_right = self.polygon()
            return [tip, tail_left, tail_right]
        if self.kind == "hexagon":
            return self.polygon() + [(x, y)]
        if self.kind == "cross":
            return []
        if self.kind == "triangle":
            return [(x, y - r), (x, y + r), (x - r, y + r), (x + r, y + r), (x, y + r / 3)]
        return [(x, y - r), (x, y + r), (x - r, y), (x + r, y), (x, y)]

    def box(self) -> list[float]:
        """xyxy pixel box of the visible mask."""
        rows, columns = np.nonzero(self.mask)
        return [float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1)]


@dataclass
class Scene:
    image: Image.Image
    shapes: list[Shape]

    def describe(self, shape: Shape) -> str:
        """
        The shortest referring expression: kind, then colour, then size, then (when even the full name is
        shared) the position relative to the nearest other shape, e.g. "the small red circle left of the blue
        square".
        """
        unique = self._by_attributes(shape)
        if unique is not None:
            return unique
        others = [s for s in self.shapes if s is not shape]
        neighbour = min(others, key=lambda o: math.dist(o.centre, shape.centre))
        relation = "left of" if shape.centre[0] < neighbour.centre[0] else "right of"
        neighbour_text = self._by_attributes(neighbour) or f"the {neighbour.name}"
        return f"the {shape.name} {relation} {neighbour_text}"

    def _by_attributes(self, shape: Shape) -> str | None:
        others = [s for s in self.shapes if s is not shape]
        for words in ((shape.kind,), (shape.colour, shape.kind), (shape.size, shape.colour, shape.kind)):
            if not any(all(getattr(o, _field(w)) == w for w in words) for o in others):
                return "the " + " ".join(words)
        return None

    def caption(self) -> str:
        ordered = sorted(self.shapes, key=lambda s: s.centre[0])
        names = [f"a {s.name}" for s in ordered]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"There {'is' if len(names) == 1 else 'are'} {listed}."

    def count(self, kind: str | None = None) -> int:
        return sum(1 for s in self.shapes if kind is None or s.kind == kind)


def _field(word: str) -> str:
    return "colour" if word in COLOURS else "size" if word in SIZES else "kind"


def _foreign_polygon(kind: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    if kind == "arrow":  # tip up, two tail corners and the notch between them
        return [(x, y - r), (x - r, y + r), (x, y + r / 3), (x + r, y + r)]
    if kind == "hexagon":
        return [(x + r * math.cos(a), y + r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)]
    arm = r / 3  # a plus sign
    return [(x - arm, y - r), (x + arm, y - r), (x + arm, y - arm), (x + r, y - arm), (x + r, y + arm),
            (x + arm, y + arm), (x + arm, y + r), (x - arm, y + r), (x - arm, y + arm), (x - r, y + arm),
            (x - r, y - arm), (x - arm, y - arm)]


def make_scene(
    seed: int, index: int, size: int = 128, max_shapes: int = 6, min_visible: float = 0.5, kinds: tuple = KINDS
) -> Scene:
    """
    Scene `index` of the stream `seed`, with shapes of `kinds`. Shapes are placed one after another; a new shape
    that would leave an earlier one less than `min_visible` visible is drawn again elsewhere (and dropped after
    20 tries), so `min_visible=1` gives scenes without overlaps.
    """
    rng = random.Random(f"scene-{seed}-{index}")
    wanted = rng.randint(1, max_shapes)
    shapes, full_masks = [], []
    for _ in range(wanted):
        for _ in range(20):
            shape = _random_shape(rng, size, kinds)
            mask = _polygon_mask(shape, size)
            visible = [m & ~mask for m in _visible(full_masks)]
            if all(v.sum() >= min_visible * m.sum() for v, m in zip(visible, full_masks)):
                shapes.append(shape)
                full_masks.append(mask)
                break
    return render(shapes, size, rng)


def _visible(full_masks: list[np.ndarray]) -> list[np.ndarray]:
    """What stays visible of each shape under the ones drawn after it."""
    visible, covered = [], np.zeros_like(full_masks[0]) if full_masks else None
    for mask in reversed(full_masks):
        visible.append(mask & ~covered)
        covered = covered | mask
    return visible[::-1]


def _random_shape(rng: random.Random, size: int, kinds: tuple = KINDS) -> Shape:
    size_name = rng.choice(list(SIZES))
    low, high = SIZES[size_name]
    radius = rng.uniform(low, high) * size / 2
    centre = (rng.uniform(radius, size - radius), rng.uniform(radius, size - radius))
    return Shape(rng.choice(kinds), rng.choice(list(COLOURS)), size_name, centre, radius)


def _polygon_mask(shape: Shape, size: int) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(shape.polygon(), fill=1)
    return np.asarray(mask, dtype=bool)


def render(shapes: list[Shape], size: int, rng: random.Random) -> Scene:
    """Draw the shapes in order (with slight pixel noise); each shape's mask is what stays visible of it."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        draw.polygon(shape.polygon(), fill=COLOURS[shape.colour])
    pixels = np.asarray(image, dtype=np.int16)
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-6, 7, pixels.shape)
    image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    for shape, mask in zip(shapes, _visible([_polygon_mask(shape, size) for shape in shapes])):
        shape.mask = mask
    return Scene(image=image, shapes=shapes)


__all__ = ["COLOURS", "FOREIGN_KEYPOINTS", "FOREIGN_KINDS", "KEYPOINTS", "KINDS", "SIZES", "Scene", "Shape", "make_scene", "render"]
