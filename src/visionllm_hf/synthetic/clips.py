"""Synthetic video clips: coloured shapes on a plain background, one of them moving, with exact per-frame truth.

A clip holds `num_frames` frames of 1 to `max_shapes` shapes drawn like still scenes (same kinds, colours, sizes,
background and pixel noise). Exactly one shape, the mover, travels in a straight line left, right, up or down over
40-60% of the image side, staying inside the image; its kind is unique in the clip, so "the circle" names it. The
other shapes are static and placed off the mover's whole path, so no two shapes ever overlap and every mask is the
full shape. Sometimes (p = 0.3) one static shape appears at some frame or leaves after some frame. Clips are a
pure function of `(seed, index)`.

The caption names the mover, then the other shapes in placement order (whether or not they are always present):
"a small red circle moves left." or "a small red circle moves left past a large blue square and a small green
triangle."
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from ..processing.templates import VIDEO_CAPTION
from .scenes import KINDS, Shape, _polygon_mask, _random_shape, render

DIRECTIONS = ("left", "right", "up", "down")
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass
class Track:
    kind: str
    colour: str
    size: str
    moves: str | None  # the direction, or None for a static shape
    present: list[bool]  # per frame
    masks: list[np.ndarray | None]  # per frame, None where absent

    @property
    def name(self) -> str:
        return f"{self.size} {self.colour} {self.kind}"

    def box(self, frame: int) -> list[float] | None:
        """xyxy pixel box of the mask in `frame` (None where the shape is absent)."""
        if self.masks[frame] is None:
            return None
        rows, columns = np.nonzero(self.masks[frame])
        return [float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1)]


@dataclass
class Clip:
    frames: list[Image.Image]
    tracks: list[Track]  # the mover first, then the static shapes in placement order

    def mover(self) -> Track:
        return next(track for track in self.tracks if track.moves is not None)

    def direction(self) -> str:
        return self.mover().moves

    def count(self) -> int:
        """Distinct shapes that appear in any frame."""
        return sum(1 for track in self.tracks if any(track.present))

    def caption(self) -> str:
        mover = self.mover()
        others = [f"a {track.name}" for track in self.tracks if track is not mover]
        past = ""
        if others:
            past = " past " + (others[0] if len(others) == 1 else ", ".join(others[:-1]) + " and " + others[-1])
        return f"a {mover.name} moves {mover.moves}{past}."


def make_clip(seed: int, index: int, size: int = 128, num_frames: int = 8, max_shapes: int = 3) -> Clip:
    """Clip `index` of the stream `seed`: a mover plus up to `max_shapes - 1` static shapes off its path."""
    rng = random.Random(f"clip-{seed}-{index}")
    wanted = rng.randint(1, max_shapes)
    direction, movers = _mover_path(rng, size, num_frames)
    occupied = np.zeros((size, size), dtype=bool)
    for shape in movers:
        occupied |= _polygon_mask(shape, size)
    statics = []
    other_kinds = tuple(kind for kind in KINDS if kind != movers[0].kind)
    for _ in range(wanted - 1):
        for _ in range(20):
            shape = _random_shape(rng, size, other_kinds)
            mask = _polygon_mask(shape, size)
            if not (mask & occupied).any():
                statics.append(shape)
                occupied |= mask
                break
    present = [[True] * num_frames for _ in statics]
    if rng.random() < 0.3 and statics and num_frames > 1:
        which, cut = rng.randrange(len(statics)), rng.randint(1, num_frames - 1)
        appears = rng.random() < 0.5
        present[which] = [(t >= cut) == appears for t in range(num_frames)]
    tracks = [Track(movers[0].kind, movers[0].colour, movers[0].size, direction, [True] * num_frames, [])]
    tracks += [Track(s.kind, s.colour, s.size, None, p, []) for s, p in zip(statics, present)]
    frames = []
    for t in range(num_frames):
        shapes = [movers[t]] + [s for s, p in zip(statics, present) if p[t]]
        frames.append(render(shapes, size, rng).image)
        for track, shape in zip(tracks, [movers[t]] + statics):
            track.masks.append(shape.mask.copy() if track.present[t] else None)
    return Clip(frames=frames, tracks=tracks)


def _mover_path(rng: random.Random, size: int, num_frames: int) -> tuple[str, list[Shape]]:
    """The mover in every frame: linear motion over 40-60% of the side, fully inside the image throughout."""
    base = _random_shape(rng, size)
    direction = rng.choice(DIRECTIONS)
    distance = rng.uniform(0.4, 0.6) * size
    dx, dy = _STEP[direction]
    low, high = base.radius + 1, size - base.radius - 1 - distance  # start range along the axis, moving forward
    start = rng.uniform(low, high) if dx + dy > 0 else rng.uniform(low + distance, high + distance)
    x, y = (start, base.centre[1]) if dx else (base.centre[0], start)
    steps = [distance * t / max(num_frames - 1, 1) for t in range(num_frames)]
    return direction, [Shape(base.kind, base.colour, base.size, (x + dx * s, y + dy * s), base.radius) for s in steps]


def shuffled(clip: Clip, rng: random.Random) -> list[Image.Image]:
    """The clip's frames in a random order that differs from the original one (needs at least two frames)."""
    order = list(range(len(clip.frames)))
    if len(order) < 2:
        raise ValueError("a clip needs at least two frames to be shuffled")
    while order == sorted(order):
        rng.shuffle(order)
    return [clip.frames[t] for t in order]


def write_clip_dataset(root: str | Path, num_clips: int, seed: int = 0, size: int = 128,
                       num_frames: int = 8) -> dict[str, Path]:
    """
    Clips `0 .. num_clips-1` of stream `seed` under `root`: frame folders `clips/{index:05d}/frame_{t:02d}.png`,
    `video_conversations.json` (caption, direction and counting records, LLaVA style) and `video_masks.json` (the
    mover's per-frame COCO RLE masks and xyxy boxes). Returns the paths. Same seed, same files.
    """
    root = Path(root)
    conversations, masks = [], []
    for index in range(num_clips):
        clip = make_clip(seed, index, size=size, num_frames=num_frames)
        video = f"clips/{index:05d}"
        (root / video).mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(clip.frames):
            frame.save(root / video / f"frame_{t:02d}.png")
        mover = clip.mover()
        rng = random.Random(f"clip-questions-{seed}-{index}")
        questions = [
            ("video_caption", rng.choice(VIDEO_CAPTION), clip.caption()),
            ("video_qa", f"Which way does the {mover.kind} move? Answer with one word.", clip.direction()),
            ("video_counting", "How many shapes appear in the video? Answer with a number.", str(clip.count())),
        ]
        conversations += [
            {"video": video, "task": task, "conversations": [
                {"from": "human", "value": "<video>\n" + question}, {"from": "gpt", "value": answer}]}
            for task, question, answer in questions
        ]
        masks.append({"video": video, "kind": mover.kind, "colour": mover.colour, "direction": mover.moves,
                      "masks": [_rle(mask) for mask in mover.masks],
                      "boxes": [mover.box(t) for t in range(len(clip.frames))]})
    paths = {"root": root, "clips": root / "clips", "conversations": root / "video_conversations.json",
             "masks": root / "video_masks.json"}
    paths["clips"].mkdir(parents=True, exist_ok=True)
    paths["conversations"].write_text(json.dumps(conversations))
    paths["masks"].write_text(json.dumps(masks))
    return paths


def _rle(mask: np.ndarray | None) -> dict | None:
    if mask is None:
        return None
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


__all__ = ["DIRECTIONS", "Clip", "Track", "make_clip", "shuffled", "write_clip_dataset"]
