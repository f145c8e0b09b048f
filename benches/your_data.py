"""Does fine-tuning on your own data pay? The shipped demo model on categories it never saw, zero-shot and after
fine-tuning with the README's recommended command for a fixed wall-clock budget.

The data are `write_foreign_dataset` scenes (arrows, hexagons and crosses; polygons, a referring file of another
name, untagged counting questions): `--train-images` for training, `--eval-images` held out (another seed). Both
models are scored by `visionllm-hf eval` on the held-out set: detection AP50 over the new categories, REC P@0.5
through `[DET]` and counting exact match, next to the counting baseline of always answering the most common
count. Training steps are set from the measured speed of a short first run so that training takes `--minutes`.

    python benches/your_data.py [--minutes 15] [--train-images 1500] [--eval-images 100] [--out outputs/your_data]
                                [--smoke]
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from visionllm_hf.cli import main as cli
from visionllm_hf.data_formats import is_counting_question, question_and_answer
from visionllm_hf.demo import DEMO_MODEL
from visionllm_hf.synthetic.foreign import write_foreign_dataset

METRICS = ("detection AP50", "REC P@0.5", "counting exact match")


def recommended_command(model: str, data: dict, output: Path, steps: int) -> list[str]:
    """The README's "continue training a checkpoint" command for this data (stage picked from the history)."""
    images, coco, refs, chat = data["images"], data["instances"], data["referring"], data["conversations"]
    return [
        "train", "--model", model, "--output_dir", str(output), "--max_steps", str(steps),
        "--learning_rate_scale", "0.3", "--per_device_train_batch_size", "4", "--save_strategy", "no",
        "--logging_steps", "100", "--disable_tqdm", "true", "--use_cpu", "--data",
        f"coco={coco},images={images},task=instance_segmentation,ratio=2",
        f"referring={refs},images={images},task=grounding",
        f"conversation={chat},images={images},ratio=2",
    ]


def evaluate(model: str, data: dict, out: Path, max_images: int | None) -> dict:
    specs = [f"coco={data['instances']},images={data['images']},task=detection",
             f"referring={data['referring']},images={data['images']},task=grounding",
             f"conversation={data['conversations']},images={data['images']}"]
    limit = ["--max-images", str(max_images)] if max_images else []
    cli(["eval", "--model", model, "--data", *specs, *limit, "--out", str(out)])
    return json.loads(out.read_text())


def majority_count_baseline(conversations: Path) -> float:
    """Exact match of always answering the most common count of the held-out counting questions."""
    answers = [question_and_answer(r)[1].strip() for r in json.loads(conversations.read_text()) if is_counting_question(r)]
    return Counter(answers).most_common(1)[0][1] / len(answers)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget")
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--eval-images", type=int, default=100)
    parser.add_argument("--out", default="outputs/your_data")
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few scenes: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.train_images, args.eval_images = 0.05, 8, 4
    out = Path(args.out)
    train = write_foreign_dataset(out / "train", args.train_images, seed=0)
    heldout = write_foreign_dataset(out / "heldout", args.eval_images, seed=1)
    zero_shot = evaluate(str(DEMO_MODEL), heldout, out / "zero_shot.json", None)

    started = time.time()  # a short run measures the speed, the real run fills the budget
    calibration = 4 if args.smoke else 60
    cli(recommended_command(str(DEMO_MODEL), train, out / "calibration", calibration))
    seconds_per_step = (time.time() - started) / calibration
    steps = max(2, int(args.minutes * 60 / seconds_per_step))
    started = time.time()
    cli(recommended_command(str(DEMO_MODEL), train, out / "model", steps))
    minutes = (time.time() - started) / 60
    tuned = evaluate(str(out / "model"), heldout, out / "fine_tuned.json", None)

    print(f"\ndemo model on {args.eval_images} held-out scenes of arrows, hexagons and crosses (never seen before)")
    print(f"fine-tuned {steps} steps of 4 samples on {args.train_images} scenes: {minutes:.1f} min")
    print(f"{'metric':<26}{'zero-shot':>10}{'fine-tuned':>12}")
    for name in METRICS:
        print(f"{name:<26}{zero_shot.get(name, float('nan')):>10.3f}{tuned.get(name, float('nan')):>12.3f}")
    print(f"{'counting, most common':<26}{majority_count_baseline(heldout['conversations']):>10.3f}")


if __name__ == "__main__":
    main()
