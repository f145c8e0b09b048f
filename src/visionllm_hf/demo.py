"""`visionllm-hf demo`: the shipped demo model, loaded as a hub user would, on every task.

The model (`demo_model/` in the package, trained on synthetic shapes with `visionllm-hf train`) is loaded with
`AutoModel` / `AutoProcessor` and `trust_remote_code=True`, then asked to answer questions, caption, describe
and classify regions, ground expressions, detect and segment shapes, find their keypoints and segment from a
clicked point, on held-out synthetic scenes and on real photos shipped inside scikit-image. Perception answers
follow the asked structure (`circle [DET], square [DET], ...`), as `visionllm-hf eval` scores them. Every answer is
drawn onto its image (PNG) and collected in `results.json`; a summary table is printed.
"""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import nms
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor

from .evaluation.forcing import forced_generation_kwargs
from .processing.templates import region_caption_prompt, region_classification_prompt
from .synthetic import KINDS, make_scene
from .trainer.data import REC_TEMPLATES
from .visualization import draw_objects, draw_visual_prompts

DEMO_MODEL = Path(__file__).parent / "demo_model"
HELD_OUT_SEED = 12345  # the demo model never saw this stream


def demo_inputs(num_scenes: int = 3, photos: bool = True) -> list[dict]:
    """Held-out synthetic scenes (with a known shape to point at) and scikit-image's real photos."""
    items = []
    for index in range(num_scenes):
        scene = make_scene(HELD_OUT_SEED, index)
        shape = max(scene.shapes, key=lambda s: s.mask.sum())
        items.append({"name": f"scene{index}", "image": scene.image, "box": shape.box(),
                      "point": [shape.centre[0], shape.centre[1]], "expression": scene.describe(shape),
                      "kind": shape.kind})
    try:
        from skimage import data
    except ImportError:  # scikit-image is the `demo` extra; synthetic scenes still run
        photos = False
    if not photos:
        return items
    for name in ("astronaut", "coffee", "chelsea"):
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        width, height = image.size
        box = [width * 0.3, height * 0.3, width * 0.7, height * 0.7]
        items.append({"name": name, "image": image, "box": box, "point": [width / 2, height / 2],
                      "expression": "the object in the middle", "kind": KINDS[0]})
    return items


def tasks_for(item: dict) -> list[dict]:
    """
    The questions asked about one image: task, question, optional regions and, for perception, the `answer`
    whose structure generation follows (the categories asked, the expression), as VisionLLM v2 and
    `visionllm-hf eval` run perception; the routing tokens' queries and decoders still run inside `generate`.
    Grounding goes through `[DET]` with the expression as the category and shows the best box (`keep` 1).
    """
    detect = ", ".join(f"{kind} [DET]" for kind in KINDS) + "."
    categories = ", ".join(KINDS)
    expression = item["expression"]
    region = [{"box": item["box"]}]
    return [
        {"task": "vqa", "question": "How many shapes are there? Answer with a number."},
        {"task": "captioning", "question": "Describe the image briefly."},
        {"task": "region captioning", "question": region_caption_prompt(1), "regions": region},
        {"task": "region classification", "question": region_classification_prompt(), "regions": region},
        {"task": "grounding", "question": REC_TEMPLATES[0].format(expression=expression),
         "answer": f"{expression} [DET].", "keep": 1},
        {"task": "detection", "question": f"Please perform object detection on this image to identify {categories}.",
         "answer": detect},
        {"task": "instance segmentation", "question": f"Please segment all instances of {categories} in this image.",
         "answer": detect},
        {"task": "pose", "question": f"Please estimate the pose of every {item['kind']} in the image.",
         "answer": f"{item['kind']} [POSE]."},
        {"task": "interactive segmentation", "question": "Please segment the object indicated by <region>.",
         "regions": [{"point": item["point"]}], "answer": "[SEG]."},
    ]


def run_demo(
    out: Path,
    model_path: str | Path | None = None,
    max_new_tokens: int = 40,
    num_scenes: int = 3,
    photos: bool = True,
    keep: int = 3,
) -> list[dict]:
    model_path = Path(model_path or DEMO_MODEL)
    if not (model_path / "config.json").exists():
        raise FileNotFoundError(f"no checkpoint at {model_path}; pass --model or build one with `visionllm-hf build`")
    model = AutoModel.from_pretrained(model_path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    out.mkdir(parents=True, exist_ok=True)
    items = demo_inputs(num_scenes, photos)
    results = []
    for item in tqdm(items, desc="demo"):
        for task in tasks_for(item):
            question = task["question"]
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
            regions = [[task["regions"]]] if "regions" in task else None
            inputs = processor(images=[[item["image"]]], text=[prompt], regions=regions)
            kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False}
            if "answer" in task:
                kwargs.update(forced_generation_kwargs(processor, [task["answer"]]))
            generated = model.generate(**inputs, **kwargs)
            size = (item["image"].height, item["image"].width)
            answer = processor.post_process_generation(generated, target_sizes=[size])[0]
            answer["objects"] = _shown_objects(answer["objects"], task.get("keep", keep))
            # pose data has no masks, so the keypoint decoder's mask head is never trained: draw boxes and keypoints
            drawn = [{**o, "mask": None} if o["routing"] == "[POSE]" else o for o in answer["objects"]]
            picture = draw_visual_prompts(draw_objects(item["image"], drawn), task.get("regions", []))
            file_name = f"{item['name']}_{task['task'].replace(' ', '_')}.png"
            picture.save(out / file_name)
            results.append({
                "image": item["name"], "task": task["task"], "question": question, "answer": answer["text"],
                "objects": [_serialisable(o) for o in answer["objects"]], "picture": file_name,
            })
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _print_summary(results, model_path, out)
    return results


def _shown_objects(objects: list[dict], keep: int, min_score: float = 0.25) -> list[dict]:
    """
    What a person would look at: per (label, routing token), the highest-scoring objects, at most `keep`. For
    the set-prediction tokens (`[DET]`, `[POSE]`) only scores of at least `min_score`, and near-duplicate boxes
    (IoU above 0.5, torchvision's NMS) of the same label dropped, as a detector's post-processing does.
    """
    kept = []
    for key in dict.fromkeys((o["label"], o["routing"]) for o in objects):
        mine = sorted((o for o in objects if (o["label"], o["routing"]) == key), key=lambda o: -o["score"])
        if key[1] in ("[DET]", "[POSE]"):
            mine = [o for o in mine if o["score"] >= min_score and o.get("box") is not None]
            if mine:
                boxes = torch.tensor([o["box"] for o in mine], dtype=torch.float32)
                scores = torch.tensor([o["score"] for o in mine], dtype=torch.float32)
                mine = [mine[i] for i in nms(boxes, scores, iou_threshold=0.5).tolist()]
        kept += mine[:keep]
    return kept


def _serialisable(obj: dict) -> dict:
    mask = obj.get("mask")
    return {**obj, "mask": None if mask is None else {"pixels": int(np.asarray(mask).sum())}}


def _print_summary(results: list[dict], model_path: Path, out: Path):
    print(f"model: {model_path}")
    print(f"{'image':<10}{'task':<26}{'objects':>8}  answer")
    for row in results:
        answer = row["answer"] if len(row["answer"]) <= 60 else row["answer"][:57] + "..."
        print(f"{row['image']:<10}{row['task']:<26}{len(row['objects']):>8}  {answer}")
    print(f"{len(results)} answers; pictures and results.json in {out}")


__all__ = ["DEMO_MODEL", "demo_inputs", "run_demo", "tasks_for"]
