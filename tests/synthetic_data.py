"""Small datasets in the users' formats (COCO JSON, LLaVA conversation JSON, referring JSON lines), written
by the tests themselves: coloured rectangles and ellipses on a grey background, with exact annotations."""

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 180, 60)}
CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}, {"id": 3, "name": "person"}]


def write_datasets(root: Path, num_images: int = 10, size: int = 64, seed: int = 0) -> dict[str, Path]:
    rng = random.Random(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, conversations, referring = [], [], [], []
    for image_id in range(1, num_images + 1):
        image = Image.new("RGB", (size, size), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        shapes = []
        for _ in range(rng.randint(1, 3)):
            w, h = rng.randint(12, 28), rng.randint(12, 28)
            x, y = rng.randint(0, size - w), rng.randint(0, size - h)
            category = rng.choice(CATEGORIES)
            colour = rng.choice(list(COLOURS))
            if category["name"] == "circle":
                draw.ellipse([x, y, x + w - 1, y + h - 1], fill=COLOURS[colour])
            else:
                draw.rectangle([x, y, x + w - 1, y + h - 1], fill=COLOURS[colour])
            shapes.append((category, colour, [x, y, w, h]))
        name = f"{image_id:03d}.png"
        image.save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for category, colour, (x, y, w, h) in shapes:
            annotation = {
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category["id"], "iscrowd": 0,
                "bbox": [x, y, w, h], "area": w * h,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            }
            if category["name"] == "person":
                points = [[x + w * (k % 3) / 2, y + h * (k // 3) / 5, 2] for k in range(17)]
                annotation["keypoints"] = [v for point in points for v in point]
                annotation["num_keypoints"] = 17
            annotations.append(annotation)
            referring.append({"image": name, "expression": f"the {colour} {category['name']}",
                              "box": [x, y, x + w, y + h], "category": category["name"],
                              "mask": annotation["segmentation"]})
        names = ", ".join(f"a {colour} {category['name']}" for category, colour, _ in shapes)
        conversations.append({"image": name, "conversations": [
            {"from": "human", "value": "<image>\nWhat shapes are there?"},
            {"from": "gpt", "value": f"There is {names}."},
        ]})
    paths = {"images": images_dir, "coco": root / "instances.json", "conversation": root / "conversations.json",
             "referring": root / "referring.jsonl"}
    paths["coco"].write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    paths["conversation"].write_text(json.dumps(conversations))
    paths["referring"].write_text("\n".join(json.dumps(record) for record in referring))
    return paths
