"""In-context detection (VisionLLM v2's multi-image prompts): do examples with a marked object help find its kind?

The shipped demo model is tuned through `visionllm-hf train` on COCO-format synthetic scenes with the
`in_context_detection` task (1-2 other images of a kind, one of its shapes boxed in each, then the query image:
"Examples: <region> in image 1. Find all of them in the last image." -> "circle [DET]."), mixed with plain
detection. On held-out scenes it is asked the in-context question with examples from other held-out scenes, and
the same question without examples (only the query image): detection AP50 of the examples' kind in the query,
and how often the answer names that kind (the query image may hold other kinds: chance is 1 in 4 kinds).
The decoders read the last image (the processor's default), so the examples only tell the LLM what to find.

    python benches/in_context.py [--train-images 2000] [--eval-queries 100] [--steps 2000] [--out outputs/in_context]
                                 [--smoke]
"""

import argparse
import contextlib
import io
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image
from pycocotools.coco import COCO
from transformers import AutoModel, AutoProcessor

from visionllm_hf.cli import main as cli
from visionllm_hf.demo import DEMO_MODEL
from visionllm_hf.evaluation.metrics import coco_average_precision
from visionllm_hf.processing.tasks import IN_CONTEXT_TEMPLATES, in_context_question
from visionllm_hf.synthetic import make_scene


def train(out: Path, train_images: int, steps: int, batch_size: int) -> Path:
    data = out / "scenes"
    cli(["synth", "--out", str(data), "--num-images", str(train_images)])
    model = out / "model"
    coco = f"coco={data}/instances.json,images={data}/images"
    cli(["train", "--model", str(DEMO_MODEL), "--stage", "v2-decoders", "--learning_rate_scale", "10",
         "--data", f"{coco},task=in_context_detection,ratio=2", f"{coco},task=detection",
         "--output_dir", str(model), "--max_steps", str(steps), "--per_device_train_batch_size", str(batch_size),
         "--logging_steps", str(max(steps // 10, 1)), "--save_strategy", "no", "--seed", "0"])
    return model


def queries(count: int, pool: int = 300) -> list[dict]:
    """Held-out queries (stream seed 1): a scene, a kind in it, and 1-2 other scenes with that kind boxed."""
    scenes = [make_scene(1, index) for index in range(pool)]
    rng = random.Random(0)
    made = []
    for index, scene in enumerate(scenes[:count]):
        kind = rng.choice(sorted({shape.kind for shape in scene.shapes}))
        others = [s for s in scenes[count:] if any(shape.kind == kind for shape in s.shapes)]
        examples = rng.sample(others, rng.randint(1, 2))
        marked = [{"box": rng.choice([s for s in example.shapes if s.kind == kind]).box()} for example in examples]
        made.append({"scene": scene, "kind": kind, "examples": [e.image for e in examples], "regions": marked})
    return made


def detect(model, processor, query: dict, with_examples: bool) -> tuple[str, list[tuple[list[float], float]]]:
    """
    The kind the model names, and the boxes (xyxy pixels) and scores its `[DET]` gives on the query image. As
    VisionLLM v2 evaluates perception, the answer's structure is given (`<name> [DET].`) and the model chooses
    the rest: here the name, greedily, then the decoders' boxes.
    """
    images = (query["examples"] if with_examples else []) + [query["scene"].image]
    regions = query["regions"] if with_examples else []
    question = in_context_question(IN_CONTEXT_TEMPLATES[0], len(regions)) if with_examples else \
        IN_CONTEXT_TEMPLATES[0].replace("<examples> ", "")
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    inputs = processor(images=[images], text=[prompt], regions=[[[r] for r in regions] + [[]]] if regions else None)
    with torch.no_grad():
        named = model.generate(**inputs, max_new_tokens=4, return_dict_in_generate=False)
        words = processor.batch_decode(named[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].split()
        name = words[0].strip(".,") if words else "object"
        inputs["forced_answer_ids"] = torch.tensor([processor.answer_token_ids(f"{name} [DET].")])
        outputs = model.generate(**inputs, max_new_tokens=12)
    size = query["scene"].image.size[::-1]
    objects = processor.post_process_generation(outputs, target_sizes=[size], threshold=0.0)[0]["objects"]
    return name, [(o["box"], o["score"]) for o in objects if o["routing"] == "[DET]"]


def scores(model_dir: Path, made: list[dict], with_examples: bool) -> tuple[float, float]:
    """Detection AP50 of the asked kind over the queries, and how often the model names that kind."""
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    images, annotations, results, named_right = [], [], [], 0
    for image_id, query in enumerate(made, start=1):
        images.append({"id": image_id, "width": 128, "height": 128})
        for shape in query["scene"].shapes:
            if shape.kind == query["kind"]:
                x1, y1, x2, y2 = shape.box()
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        name, found = detect(model, processor, query, with_examples)
        named_right += name == query["kind"]
        for (x1, y1, x2, y2), score in found:
            results.append({"image_id": image_id, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    truth = COCO()
    truth.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "asked"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
    return coco_average_precision(truth, results, "bbox")["AP50"], named_right / len(made)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--eval-queries", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", default="outputs/in_context")
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few scenes: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.train_images, args.eval_queries, args.steps, args.batch_size = 8, 3, 2, 2
    out = Path(args.out)
    started = time.time()
    model_dir = train(out, args.train_images, args.steps, args.batch_size)
    trained = time.time()
    made = queries(args.eval_queries, pool=max(3 * args.eval_queries, 40))
    metrics = {}
    for name, folder, with_examples in (("with examples", model_dir, True), ("without examples", model_dir, False),
                                        ("shipped demo, with examples", DEMO_MODEL, True)):
        metrics[f"AP50, {name}"], metrics[f"kind named, {name}"] = scores(folder, made, with_examples)
    metrics["kind named, chance"] = 0.25
    print(f"\n{args.steps} steps of {args.batch_size} ({args.train_images} training scenes): "
          f"{(trained - started) / 60:.1f} min; {args.eval_queries} held-out queries")
    for name, value in metrics.items():
        print(f"{name:<36} {value:.3f}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
