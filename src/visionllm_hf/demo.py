"""`visionllm-hf demo`: the shipped demo model, loaded as a hub user would, on every task.

The model (`demo_model/` in the package, trained on synthetic shapes with `visionllm-hf train`) is loaded with
`AutoModel` / `AutoProcessor` and `trust_remote_code=True`, then asked to answer questions, caption, describe
and classify regions, ground expressions, detect and segment shapes, find their keypoints and segment from a
clicked point, on held-out synthetic scenes and on real photos shipped inside scikit-image. Perception answers
are asked by task name (`processor(..., task="detection", categories=...)`) and follow the asked structure
(`circle [DET], square [DET], ...`), as `visionllm-hf eval` scores them. Every answer is
drawn onto its image (PNG) and collected in `results.json`; a summary table is printed.
"""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor

from .synthetic import KINDS, make_scene
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
    The tasks asked about one image, by name (`processor(..., task=...)`, the README's path): each with its
    arguments (`categories`, `expression`, `text`, `regions`). Perception tasks get their answer's structure
    (the categories asked, the expression) from the processor, as VisionLLM v2 and `visionllm-hf eval` run
    perception; the routing tokens' queries and decoders still run inside `generate`. Grounding shows the best
    box only (`keep` 1).
    """
    region = [{"box": item["box"]}]
    return [
        {"name": "vqa", "task": "vqa", "text": "How many shapes are there? Answer with a number."},
        {"name": "captioning", "task": "caption"},
        {"name": "region captioning", "task": "region_caption", "regions": region},
        {"name": "region classification", "task": "region_classification", "regions": region},
        {"name": "grounding", "task": "grounding", "expression": item["expression"], "keep": 1},
        {"name": "detection", "task": "detection", "categories": list(KINDS)},
        {"name": "instance segmentation", "task": "instance_segmentation", "categories": list(KINDS)},
        {"name": "pose", "task": "pose", "categories": [item["kind"]]},
        {"name": "interactive segmentation", "task": "interactive_segmentation", "regions": [{"point": item["point"]}]},
    ]


def run_demo(
    out: Path,
    model_path: str | Path | None = None,
    max_new_tokens: int = 40,
    num_scenes: int = 3,
    photos: bool = True,
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
            regions = [[task["regions"]]] if "regions" in task else None
            inputs = processor(images=[item["image"]], task=task["task"], text=task.get("text"), regions=regions,
                               categories=task.get("categories"), expression=task.get("expression"))
            with torch.no_grad():
                generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            size = (item["image"].height, item["image"].width)
            answer = processor.post_process_generation(generated, target_sizes=[size])[0]
            answer["objects"] = answer["objects"][: task.get("keep")]
            # pose data has no masks, so the keypoint decoder's mask head is never trained: draw boxes and keypoints
            drawn = [{**o, "mask": None} if o["routing"] == "[POSE]" else o for o in answer["objects"]]
            picture = draw_visual_prompts(draw_objects(item["image"], drawn), task.get("regions", []))
            file_name = f"{item['name']}_{task['name'].replace(' ', '_')}.png"
            picture.save(out / file_name)
            question = processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True).split("USER:")[-1]
            results.append({
                "image": item["name"], "task": task["name"], "question": question.removesuffix("ASSISTANT:").strip(),
                "answer": answer["text"], "objects": [_serialisable(o) for o in answer["objects"]],
                "picture": file_name,
            })
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _print_summary(results, model_path, out)
    return results


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
