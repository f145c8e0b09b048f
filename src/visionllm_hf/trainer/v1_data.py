"""VisionLLM (v1) detection data: COCO JSON -> instructions with a category set, and object targets.

Each sample asks a random subset of categories in random order (the present ones plus up to two absent ones,
as VisionLLM v1 trains "with random task descriptions and object categories"); targets index into that set.
"""

import json
import random
from pathlib import Path

import torch

V1_DETECTION_TEMPLATES = [  # paper 000 appendix A.1
    "Please examine the image <image> and locate all objects that belong to the category set <class>. "
    "The coordinate range is <range>. The output format for each detected object is class x1 y1 x2 y2.",
    "Identify all the objects in the image <image> that belong to the category set <class> and predict a bounding "
    "box around each one. The range of coordinates is <range>.",
    "Given the image <image>, detect the objects of <class>, with coordinates in <range>.",
]


class V1DetectionSource:
    """
    Arguments:
        annotation_file (`str`): COCO instances JSON.
        image_folder (`str`): folder of its `file_name`s.
        max_categories (`int`, defaults to 10): most categories asked per sample.
    """

    def __init__(self, annotation_file: str, image_folder: str, max_categories: int = 10):
        data = json.loads(Path(annotation_file).read_text())
        self.image_folder = Path(image_folder)
        self.images = {image["id"]: image for image in data["images"]}
        self.categories = {c["id"]: c["name"] for c in data["categories"]}
        self.max_categories = max_categories
        self.annotations: dict[int, list] = {image_id: [] for image_id in self.images}
        for annotation in data["annotations"]:
            if not annotation.get("iscrowd", 0):
                self.annotations[annotation["image_id"]].append(annotation)
        self.image_ids = list(self.images)

    def __len__(self) -> int:
        return len(self.image_ids)

    def sample(self, index: int, rng: random.Random) -> dict:
        image = self.images[self.image_ids[index]]
        annotations = self.annotations[image["id"]]
        present = sorted({a["category_id"] for a in annotations})
        absent = [c for c in self.categories if c not in present]
        asked = present + rng.sample(absent, min(len(absent), rng.randint(0, 2)))
        rng.shuffle(asked)
        asked = asked[: self.max_categories]
        kept = [a for a in annotations if a["category_id"] in asked]
        boxes = torch.tensor([a["bbox"] for a in kept], dtype=torch.float32).view(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes /= torch.tensor([image["width"], image["height"]] * 2, dtype=torch.float32)
        return {
            "image": str(self.image_folder / image["file_name"]),
            "text": rng.choice(V1_DETECTION_TEMPLATES),
            "categories": [self.categories[c] for c in asked],
            "targets": {"classes": [asked.index(a["category_id"]) for a in kept], "points": boxes},
        }


class VisionLLMv1Collator:
    """Batches `V1DetectionSource` samples through the v1 processor, with `object_targets` for `forward`."""

    def __init__(self, processor, num_fields: int = 5):
        self.processor, self.num_fields = processor, num_fields

    def __call__(self, samples: list) -> dict:
        from PIL import Image

        samples = [sample for item in samples for sample in (item if isinstance(item, list) else [item])]
        images = []
        for sample in samples:
            with Image.open(sample["image"]) as image:
                images.append(image.convert("RGB"))
        batch = dict(self.processor(
            images=images, text=[s["text"] for s in samples], categories=[s["categories"] for s in samples]
        ))
        batch["object_targets"] = [sample["targets"] for sample in samples]
        batch["num_fields"] = self.num_fields
        return batch


__all__ = ["V1_DETECTION_TEMPLATES", "V1DetectionSource", "VisionLLMv1Collator"]
