"""Does the whole system learn? Train the demo size from scratch on synthetic scenes, evaluate on held-out ones.

Everything goes through the public paths a user takes: `visionllm-hf synth` writes the data as COCO /
conversation / referring files, `visionllm-hf build --preset demo` makes the random model, `visionllm-hf train`
trains it (stage `from-scratch`), and `visionllm-hf eval` scores it on a held-out stream. Prints the metrics
against the goals and the time each phase took.

    python benches/learning.py [--steps 7000] [--train-images 1500] [--eval-images 100] [--out outputs/learning]
                               [--smoke]
"""

import argparse
import json
import time
from pathlib import Path

from visionllm_hf.cli import main as cli
from visionllm_hf.evaluation import format_table

MIX = [  # (source spec without paths, sampling ratio)
    ("coco={d}/instances.json,images={d}/images,task=instance_segmentation", 3.0),
    ("coco={d}/instances.json,images={d}/images,task=pose", 1.5),
    ("coco={d}/instances.json,images={d}/images,task=interactive_segmentation", 1.0),
    ("referring={d}/referring.jsonl,images={d}/images,task=rec", 1.5),  # REC is scored through [DET] (detection data)
    ("referring={d}/referring.jsonl,images={d}/images,task=res", 1.0),
    ("referring={d}/referring.jsonl,images={d}/images,task=region_caption", 0.5),
    ("referring={d}/referring.jsonl,images={d}/images,task=region_classification", 1.0),
    ("conversation={d}/conversations.json,images={d}/images", 1.5),
]


def training_arguments(base: Path, data: Path, output: Path, steps: int) -> list[str]:
    specs = [spec.format(d=data) + f",ratio={ratio}" for spec, ratio in MIX]
    return [
        "train", "--model", str(base), "--stage", "from-scratch", "--output_dir", str(output),
        "--max_steps", str(steps), "--per_device_train_batch_size", "4", "--logging_steps", "50",
        "--save_strategy", "no", "--seed", "0", "--use_cpu", "--disable_tqdm", "true", "--data", *specs,
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=7000)
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--out", default="outputs/learning")
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few scenes: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.train_images, args.eval_images = 4, 8, 4
    out = Path(args.out)
    times = {}

    start = time.time()
    cli(["synth", "--out", str(out / "train"), "--num-images", str(args.train_images), "--seed", "0"])
    cli(["synth", "--out", str(out / "heldout"), "--num-images", str(args.eval_images), "--seed", "1"])
    cli(["build", "--preset", "demo", "--out", str(out / "base"), "--seed", "0"])
    times["data + build"] = time.time() - start

    start = time.time()
    cli(training_arguments(out / "base", out / "train", out / "model", args.steps))
    times["training"] = time.time() - start

    start = time.time()
    cli(["eval", "--model", str(out / "model"), "--data", str(out / "heldout"), "--out", str(out / "metrics.json")])
    times["evaluation"] = time.time() - start

    metrics = json.loads((out / "metrics.json").read_text())
    print(f"\ndemo preset from scratch: {args.steps} steps of 4 samples, {args.train_images} training scenes, "
          f"{args.eval_images} held-out scenes")
    print(format_table(metrics))
    print("time: " + ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in times.items()))


if __name__ == "__main__":
    main()
