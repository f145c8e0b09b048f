"""
Draw `post_process_generation` objects (boxes, masks, keypoints, labels) and the user's visual prompts (the
processor's `regions`) onto an image with PIL.
"""

import numpy as np
from PIL import Image, ImageDraw

from .processing.regions import split_region

PROMPT_COLOUR = (255, 255, 255)
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def color_for(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def draw_objects(
    image: Image.Image, objects: list[dict], mask_alpha: float = 0.45, keypoint_radius: int = 3
) -> Image.Image:
    """
    A copy of `image` with every object drawn: its mask blended in its colour, its box outlined, its keypoints
    (visibility > 0.5) as dots, and `label score` above the box. Objects are coloured by label, so every
    instance of one category shares a colour. Coordinates must be in the image's pixels
    (`post_process_generation(..., target_sizes=...)`).
    """
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    labels = list(dict.fromkeys(obj.get("label", "") for obj in objects))
    for obj in objects:
        if obj.get("mask") is not None:
            mask = np.asarray(obj["mask"], dtype=bool)
            if mask.shape != canvas.shape[:2]:
                raise ValueError(f"mask of shape {mask.shape} does not fit the {canvas.shape[1]}x{canvas.shape[0]} image")
            colour = np.array(color_for(labels.index(obj.get("label", ""))), dtype=np.float32)
            canvas[mask] = (1 - mask_alpha) * canvas[mask] + mask_alpha * colour
    drawn = Image.fromarray(canvas.round().astype(np.uint8))
    pen = ImageDraw.Draw(drawn)
    for obj in objects:
        colour = color_for(labels.index(obj.get("label", "")))
        box = obj.get("box")
        if box is not None:
            pen.rectangle([float(v) for v in box], outline=colour, width=2)
        for x, y, visibility in obj.get("keypoints") or []:
            if visibility > 0.5:
                r = keypoint_radius
                pen.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        caption = " ".join(part for part in (obj.get("label", ""), _score(obj)) if part)
        if caption and box is not None:
            pen.text((float(box[0]) + 2, max(float(box[1]) - 12, 0)), caption, fill=colour)
    return drawn


def draw_visual_prompts(
    image: Image.Image, regions: list, colour: tuple[int, int, int] = PROMPT_COLOUR, cross_size: int = 4
) -> Image.Image:
    """
    A copy of `image` with the visual prompts of one image (the regions given to the processor, in the image's
    pixels) drawn in `colour`, so a picture shows what was asked: box and polygon outlines, scribble lines, a
    cross at each point, the border of each mask.
    """
    drawn = image.convert("RGB")
    pen = ImageDraw.Draw(drawn)
    for index, region in enumerate(regions):
        kind, value = split_region(region, f"region {index}")
        if kind == "box":
            pen.rectangle([float(v) for v in value], outline=colour, width=1)
        elif kind == "point":
            x, y = (float(v) for v in value)
            pen.line([x - cross_size, y, x + cross_size, y], fill=colour, width=2)
            pen.line([x, y - cross_size, x, y + cross_size], fill=colour, width=2)
        elif kind == "scribble":
            pen.line([tuple(float(v) for v in point) for point in value], fill=colour, width=2)
        elif kind == "polygon":
            pen.polygon([tuple(float(v) for v in point) for point in value], outline=colour)
        else:
            canvas = np.asarray(drawn).copy()
            canvas[_border(np.asarray(value, dtype=bool), canvas.shape[:2], index)] = colour
            drawn = Image.fromarray(canvas)
            pen = ImageDraw.Draw(drawn)
    return drawn


def _border(mask: np.ndarray, image_shape: tuple[int, int], index: int) -> np.ndarray:
    """The mask's pixels with a 4-neighbour outside the mask (or on the image's edge)."""
    if mask.shape != image_shape:
        raise ValueError(f"region {index}: mask of shape {mask.shape} does not fit the image of shape {image_shape}")
    padded = np.pad(mask, 1)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inside


def _score(obj: dict) -> str:
    score = obj.get("score")
    return "" if score is None else f"{score:.2f}"


__all__ = ["PROMPT_COLOUR", "color_for", "draw_objects", "draw_visual_prompts"]
