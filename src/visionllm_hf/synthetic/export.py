"""Write synthetic scenes in the formats users bring: COCO JSON (instances with keypoints, captions),
LLaVA-style conversation JSON (captions, counting, colour questions) and referring JSON lines."""

import json
import random
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from .scenes import KEYPOINTS, KINDS, Scene, make_scene

CATEGORIES = [
    {"id": index + 1, "name": kind, "supercategory": "shape", "keypoints": list(KEYPOINTS), "skeleton": []}
    for index, kind in enumerate(KINDS)
]
CATEGORY_IDS = {category["name"]: category["id"] for category in CATEGORIES}


def write_dataset(root: str | Path, num_images: int, seed: int = 0, size: int = 128) -> dict[str, Path]:
    """
    Scenes `0 .. num_images-1` of stream `seed` under `root`: `images/`, `instances.json`, `captions.json`,
    `conversations.json`, `referring.jsonl` and `generation.jsonl` (prompt -> image pairs for text-to-image).
    Returns the paths. Same seed, same files.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, captions, conversations, referring, generation = [], [], [], [], [], []
    for index in range(num_images):
        scene = make_scene(seed, index, size=size)
        name = f"{index:05d}.png"
        scene.image.save(root / "images" / name)
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for shape in scene.shapes:
            annotations.append(_annotation(len(annotations) + 1, image_id, shape))
        captions.append({"id": image_id, "image_id": image_id, "caption": scene.caption()})
        rng = random.Random(f"questions-{seed}-{index}")
        conversations += _conversations(scene, name, rng)
        referring += _referring(scene, name)
        generation.append({"prompt": scene.caption().removeprefix("There are ").removeprefix("There is "),
                           "image": name})
    paths = {
        "root": root,
        "images": root / "images",
        "instances": root / "instances.json",
        "captions": root / "captions.json",
        "conversations": root / "conversations.json",
        "referring": root / "referring.jsonl",
        "generation": root / "generation.jsonl",
    }
    paths["instances"].write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    paths["captions"].write_text(json.dumps({"images": images, "annotations": captions}))  # COCO captions: no categories
    paths["conversations"].write_text(json.dumps(conversations))
    paths["referring"].write_text("\n".join(json.dumps(record) for record in referring) + "\n")
    paths["generation"].write_text("\n".join(json.dumps(record) for record in generation) + "\n")
    return paths


def _annotation(annotation_id: int, image_id: int, shape) -> dict:
    rle = coco_mask.encode(np.asfortranarray(shape.mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    x1, y1, x2, y2 = shape.box()
    keypoints = [value for x, y in shape.keypoints() for value in (round(x, 2), round(y, 2), 2)]
    return {
        "id": annotation_id, "image_id": image_id, "category_id": CATEGORY_IDS[shape.kind], "iscrowd": 0,
        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(shape.mask.sum()), "segmentation": rle,
        "keypoints": keypoints, "num_keypoints": len(KEYPOINTS),
        "attributes": {"colour": shape.colour, "size": shape.size},
    }


def _conversations(scene: Scene, name: str, rng: random.Random) -> list[dict]:
    kind = rng.choice(KINDS)
    questions = [
        ("Describe the image briefly.", scene.caption()),
        (f"How many {kind}s are there? Answer with a number.", str(scene.count(kind))),
        ("How many shapes are there? Answer with a number.", str(scene.count())),
    ]
    unique = [s for s in scene.shapes if scene.count(s.kind) == 1]
    if unique:
        shape = rng.choice(unique)
        questions.append((f"What colour is the {shape.kind}?", shape.colour))
    return [
        {"image": name, "task": "counting" if "How many" in q else "vqa", "conversations": [
            {"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}]}
        for q, a in questions
    ]


def _referring(scene: Scene, name: str) -> list[dict]:
    records = []
    for shape in scene.shapes:
        rle = coco_mask.encode(np.asfortranarray(shape.mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        records.append({
            "image": name, "expression": scene.describe(shape), "box": shape.box(), "mask": rle,
            "category": shape.kind, "region_caption": f"a {shape.name}",
        })
    return records


__all__ = ["CATEGORIES", "write_dataset"]
