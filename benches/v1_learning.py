"""Does VisionLLM (v1) learn detection? Train a tiny v1 with a v1 stage preset on synthetic scenes through
transformers' Trainer, then report COCO AP50 on held-out scenes, and AP50 per category when the instruction's
category set names only one of them (the others must drop to ~0).

`v1-stage1` adapts a pretrained LLM through LoRA, as the paper does; on a random tiny LLM use
`v1-from-scratch`.

    python benches/v1_learning.py [--stage v1-from-scratch] [--bins 257] [--steps 1500] [--train-images 1500]
                                  [--eval-images 100] [--out outputs/v1] [--smoke]
"""

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image
from pycocotools.coco import COCO
from transformers import TrainingArguments

from visionllm_hf.builder.v1 import build_tiny_v1
from visionllm_hf.cli import main as cli
from visionllm_hf.evaluation.metrics import coco_average_precision
from visionllm_hf.trainer import VisionLLMTrainer
from visionllm_hf.trainer.data import MixedTaskDataset
from visionllm_hf.trainer.stages import apply_stage, build_optimizer
from visionllm_hf.trainer.v1_data import V1_DETECTION_TEMPLATES, V1DetectionSource, VisionLLMv1Collator


@torch.no_grad()
def detect(model, processor, coco: COCO, folder: Path, names: list[str], batch_size: int = 8) -> list[dict]:
    """COCO results for every held-out image, asking for `names` only."""
    by_name = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    results, image_ids = [], coco.getImgIds()
    for start in range(0, len(image_ids), batch_size):
        infos = coco.loadImgs(image_ids[start : start + batch_size])
        images = [Image.open(folder / info["file_name"]).convert("RGB") for info in infos]
        inputs = processor(images=images, text=[V1_DETECTION_TEMPLATES[0]] * len(images), categories=[names] * len(images))
        decoded = model.decode_objects(**inputs, num_fields=5)
        sizes = [(info["height"], info["width"]) for info in infos]
        for info, found in zip(infos, processor.post_process_object_detection(decoded, model.config, [names] * len(images), sizes)):
            for label, score, (x1, y1, x2, y2) in zip(found["labels"], found["scores"].tolist(), found["boxes"].tolist()):
                results.append({"image_id": info["id"], "category_id": by_name[label], "score": score,
                                "bbox": [x1, y1, x2 - x1, y2 - y1]})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--learning-rate-scale", type=float, default=1.0)
    parser.add_argument("--stage", default="v1-from-scratch", choices=["v1-stage1", "v1-stage2", "v1-from-scratch"])
    parser.add_argument("--bins", type=int, default=257, help="location bins (the paper ablates 257 to 2049)")
    parser.add_argument("--out", default="outputs/v1")
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few scenes: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.train_images, args.eval_images = 4, 8, 4
    out = Path(args.out)
    cli(["synth", "--out", str(out / "train"), "--num-images", str(args.train_images), "--seed", "0"])
    cli(["synth", "--out", str(out / "heldout"), "--num-images", str(args.eval_images), "--seed", "1"])

    model, processor = build_tiny_v1(seed=0, num_image_tokens=20, image_size=128, num_location_bins=args.bins)
    model = apply_stage(model, args.stage)
    source = V1DetectionSource(str(out / "train" / "instances.json"), str(out / "train" / "images"))
    dataset = MixedTaskDataset([source], batch_size=4, length=args.steps, seed=0)
    training_args = TrainingArguments(
        output_dir=str(out / "run"), max_steps=args.steps, per_device_train_batch_size=1, use_cpu=True,
        remove_unused_columns=False, report_to="none", save_strategy="no", logging_steps=100,
        lr_scheduler_type="cosine", warmup_steps=0.03, disable_tqdm=True, seed=0,
    )
    trainer = VisionLLMTrainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=VisionLLMv1Collator(processor),
        optimizers=(build_optimizer(model, args.stage, args.learning_rate_scale), None),
    )
    started = time.time()
    trainer.train()
    training_minutes = (time.time() - started) / 60
    model = (trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model).eval()

    coco = COCO(str(out / "heldout" / "instances.json"))
    folder = out / "heldout" / "images"
    names = [c["name"] for c in coco.loadCats(coco.getCatIds())]
    metrics = {"AP50 (all categories asked)": coco_average_precision(coco, detect(model, processor, coco, folder, names), "bbox")["AP50"]}
    only = names[0]
    subset = detect(model, processor, coco, folder, [only])
    for category in coco.loadCats(coco.getCatIds()):
        ap50 = coco_average_precision(coco, subset, "bbox", category_ids=[category["id"]])["AP50"]
        metrics[f"AP50 of {category['name']} when asking only '{only}'"] = ap50
    print(f"\nVisionLLM v1 tiny, {args.stage}, {args.bins} location bins, {args.steps} steps of 4 scenes ({training_minutes:.1f} min), "
          f"{args.eval_images} held-out scenes")
    for name, value in metrics.items():
        print(f"  {name:<50} {value:.3f}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
