"""Does the whole system learn, and does its language side see? The demo model's recipe, end to end.

The recipe mirrors the papers' (every one starts from a pretrained CLIP and a pretrained LLM, aligns them with
the LLM frozen, then instruction-tunes, then adds decoders), through the public commands a user takes:

0. `visionllm-hf synth` writes the data; `visionllm-hf pretrain clip` trains transformers' `CLIPModel` (the demo
   tower plus a small text tower) on the image-caption pairs, `pretrain llm` a Llama on the data's text;
   `visionllm-hf build --preset demo --vision clip --llm llm` assembles them (as it does real CLIP and Vicuna);
1. `train --stage v2-pretrain`: projector and region encoder, tower and LLM frozen, on the text tasks;
2. `train --stage v2-tune`: LLM, projector and region encoder, on the text tasks;
3. `train --stage v2-decoders`: super-link queries and decoders, LLM through LoRA, on every task;

then `visionllm-hf eval` on held-out scenes, with image reliance. The paper stages' learning rates are for 7 B
models after web-scale pretraining; `--learning_rate_scale` sets them for models this small (the card records
the result). Prints the metrics against the goals, with chance levels, and the time of each phase.

    python benches/learning.py [--scale 1] [--train-images 3000] [--eval-images 100] [--out outputs/learning]
                               [--smoke]
"""

import argparse
import json
import time
from pathlib import Path

from visionllm_hf.cli import main as cli
from visionllm_hf.evaluation import GOALS  # issue 21's goals
from your_data import majority_count_baseline  # benches/ is on the path when a bench runs

TEXT_TASKS = [  # (source spec without paths, sampling ratio): what the LLM must read off the image
    ("conversation={d}/conversations.json,images={d}/images", 3.0),  # captions, counting, colours
    ("referring={d}/referring.jsonl,images={d}/images,task=region_classification", 2.0),
    ("referring={d}/referring.jsonl,images={d}/images,task=region_caption", 1.0),
]
PERCEPTION_TASKS = [
    ("coco={d}/instances.json,images={d}/images,task=instance_segmentation", 4.0),
    ("coco={d}/instances.json,images={d}/images,task=pose", 1.5),
    ("coco={d}/instances.json,images={d}/images,task=interactive_segmentation", 1.0),
    ("referring={d}/referring.jsonl,images={d}/images,task=grounding", 1.5),  # REC through [DET]
    ("referring={d}/referring.jsonl,images={d}/images,task=rec", 1.0),  # REC through <LOC>
    ("referring={d}/referring.jsonl,images={d}/images,task=res", 1.0),
]
# stage, learning-rate scale, steps, data
STAGES = [
    ("v2-pretrain", 1.0, 800, TEXT_TASKS),
    ("v2-tune", 20.0, 5000, TEXT_TASKS),
    ("v2-decoders", 10.0, 5000, TEXT_TASKS + PERCEPTION_TASKS),
]
PRETRAINING = {"clip": 1500, "llm": 1500}  # steps of 64 image-caption pairs / 32 texts
# the chance level of each metric on these scenes (4 kinds; 1-6 shapes; eval's metrics); the goals are eval's
CHANCE = {"region classification accuracy": 0.25}  # counting's: always the most common count, from the data


def specs(tasks, data: Path) -> list[str]:
    return [spec.format(d=data) + f",ratio={ratio}" for spec, ratio in tasks]


def stage_command(stage: str, lr_scale: float, steps: int, tasks, model: Path, data: Path, output: Path) -> list[str]:
    return [
        "train", "--model", str(model), "--stage", stage, "--learning_rate_scale", str(lr_scale),
        "--output_dir", str(output), "--max_steps", str(steps), "--per_device_train_batch_size", "4",
        "--logging_steps", "100", "--save_strategy", "no", "--seed", "0", "--use_cpu", "--disable_tqdm", "true",
        "--data", *specs(tasks, data),
    ]


def run_recipe(out: Path, data: Path, fraction: float = 1.0, clip_batch: int = 64) -> tuple[Path, dict[str, float]]:
    """Stage 0 to 3 on `data`; `fraction` scales every step count. Returns the model folder and phase times."""
    times = {}
    start = time.time()
    cli(["pretrain", "clip", "--captions", str(data / "captions.json"), "--instances", str(data / "instances.json"),
         "--images", str(data / "images"), "--out", str(out / "clip"), "--steps", str(max(2, int(PRETRAINING["clip"] * fraction))), "--batch-size", str(clip_batch)])
    cli(["pretrain", "llm", "--text", str(data / "conversations.json"), str(data / "captions.json"),
         str(data / "referring.jsonl"), "--out", str(out / "llm"), "--steps",
         str(max(2, int(PRETRAINING["llm"] * fraction))), "--batch-size", "32"])
    cli(["build", "--preset", "demo", "--vision", str(out / "clip"), "--llm", str(out / "llm"), "--out", str(out / "base")])
    times["stage 0 (CLIP, LLM, build)"] = time.time() - start
    model = out / "base"
    for stage, lr_scale, steps, tasks in STAGES:
        start = time.time()
        cli(stage_command(stage, lr_scale, max(2, int(steps * fraction)), tasks, model, data, out / stage))
        model = out / stage
        times[stage] = time.time() - start
    return model, times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every stage's steps")
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--out", default="outputs/learning")
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few scenes: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.scale, args.train_images, args.eval_images = 0.001, 8, 4
    out = Path(args.out)

    start = time.time()
    cli(["synth", "--out", str(out / "train"), "--num-images", str(args.train_images), "--seed", "0"])
    cli(["synth", "--out", str(out / "heldout"), "--num-images", str(args.eval_images), "--seed", "1"])
    data_time = time.time() - start
    model, times = run_recipe(out, out / "train", args.scale, clip_batch=min(64, args.train_images))
    times = {"data": data_time, **times}

    start = time.time()
    cli(["eval", "--model", str(model), "--data", str(out / "heldout"), "--out", str(out / "metrics.json")])
    times["evaluation"] = time.time() - start

    metrics = json.loads((out / "metrics.json").read_text())
    chance_levels = {**CHANCE, "counting exact match": majority_count_baseline(out / "heldout" / "conversations.json")}
    steps = [f"{part} {max(2, int(n * args.scale))}" for part, n in PRETRAINING.items()]
    steps += [f"{stage} {max(2, int(n * args.scale))}" for stage, _, n, _ in STAGES]
    print(f"\ndemo recipe, {args.train_images} training scenes, {args.eval_images} held-out scenes; steps: "
          + ", ".join(steps))
    print(f"{'metric':<36}{'value':>8}{'goal':>8}{'chance':>8}")
    for name, value in metrics.items():
        goal, chance = GOALS.get(name), chance_levels.get(name)
        print(f"{name:<36}{value:>8.3f}{'' if goal is None else f'{goal:.2f}':>8}"
              f"{'' if chance is None else f'{chance:.2f}':>8}")
    print("time: " + ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in times.items()))
    print(f"total {sum(times.values()) / 60:.1f} min")


if __name__ == "__main__":
    main()
