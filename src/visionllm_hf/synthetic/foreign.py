"""Synthetic data as a user might bring it: shapes the demo model never saw, in the forms the standard writer
does not use, for the tests and the bench that train and evaluate on "your data" without hand edits.

- categories `arrow` (3 keypoints: tip, tail_left, tail_right), `hexagon` (7: six vertices and the middle) and
  `cross` (no keypoints), ids 7, 8 and 9, in `annotations/shapes.json` (COCO);
- instance masks as COCO polygons, flat (`[x1, y1, x2, y2, ...]`) for some annotations and nested
  (`[[x1, y1, ...]]`) for others, or compressed RLE; shapes never overlap, so each polygon is the visible mask;
- referring expressions in `expressions.jsonl` (not `referring.jsonl`), masks as flat polygons or as binary
  mask PNGs under `pics/masks/` (mask paths are relative to the image folder);
- counting questions in `chat.json` without `"task"` tags; images in `pics/`.
"""

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from .scenes import FOREIGN_KEYPOINTS, FOREIGN_KINDS, Scene, make_scene

FOREIGN_CATEGORIES = [
    {"id": 7 + index, "name": kind, "supercategory": "shape", **({"keypoints": list(names)} if names else {})}
    for index, (kind, names) in enumerate(FOREIGN_KEYPOINTS.items())
]


def write_foreign_dataset(root: str | Path, num_images: int, seed: int = 0, size: int = 128) -> dict[str, Path]:
    """
    Scenes `0 .. num_images-1` of stream `seed` with the foreign kinds, written under `root` as described in the
    module docstring. Returns the paths (`root`, `images`, `instances`, `referring`, `conversations`).
    """
    root = Path(root)
    for folder in ("pics", "pics/masks", "annotations"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = {category["name"]: category["id"] for category in FOREIGN_CATEGORIES}
    images, annotations, referring, conversations = [], [], [], []
    for index in range(num_images):
        scene = make_scene(seed, index, size=size, max_shapes=5, min_visible=1.0, kinds=FOREIGN_KINDS)
        name = f"shot_{index:04d}.png"
        scene.image.save(root / "pics" / name)
        images.append({"id": 100 + index, "file_name": name, "width": size, "height": size})
        for shape in scene.shapes:
            annotations.append(_annotation(len(annotations), 100 + index, ids[shape.kind], shape))
            referring.append(_expression(root, len(referring), scene, shape, name))
        conversations += _counting(scene, name, random.Random(f"foreign-questions-{seed}-{index}"))
    paths = {
        "root": root,
        "images": root / "pics",
        "instances": root / "annotations" / "shapes.json",
        "referring": root / "expressions.jsonl",
        "conversations": root / "chat.json",
    }
    coco = {"images": images, "annotations": annotations, "categories": FOREIGN_CATEGORIES}
    paths["instances"].write_text(json.dumps(coco))
    paths["referring"].write_text("".join(json.dumps(record) + "\n" for record in referring))
    paths["conversations"].write_text(json.dumps(conversations))
    return paths


def _annotation(number: int, image_id: int, category_id: int, shape) -> dict:
    polygon = [round(value, 2) for point in shape.polygon() for value in point]
    forms = [polygon, [polygon], _compressed_rle(shape.mask)]  # flat, nested, RLE in turn
    x1, y1, x2, y2 = shape.box()
    annotation = {
        "id": 1000 + number, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(shape.mask.sum()), "segmentation": forms[number % 3],
    }
    keypoints = shape.keypoints()
    if keypoints:
        annotation["keypoints"] = [value for x, y in keypoints for value in (round(x, 2), round(y, 2), 2)]
        annotation["num_keypoints"] = len(keypoints)
    return annotation


def _expression(root: Path, number: int, scene: Scene, shape, image_name: str) -> dict:
    """A referring record; its mask a flat polygon, or (every other record) a binary mask PNG."""
    record = {"image": image_name, "expression": scene.describe(shape), "box": shape.box(), "category": shape.kind}
    if number % 2:
        mask_name = f"masks/{Path(image_name).stem}_{number}.png"
        Image.fromarray(shape.mask.astype(np.uint8) * 255).save(root / "pics" / mask_name)
        record["mask"] = mask_name
    else:
        record["mask"] = [round(value, 2) for point in shape.polygon() for value in point]
    return record


def _counting(scene: Scene, image_name: str, rng: random.Random) -> list[dict]:
    """Counting questions, untagged, as most users' files have them."""
    kind = rng.choice(FOREIGN_KINDS)
    questions = [(f"How many {kind}s are there?", str(scene.count(kind))),
                 ("How many shapes can you see?", str(scene.count()))]
    return [{"image": image_name, "conversations": [{"from": "human", "value": "<image>\n" + question},
                                                    {"from": "gpt", "value": answer}]}
            for question, answer in questions]


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


__all__ = ["FOREIGN_CATEGORIES", "write_foreign_dataset"]
