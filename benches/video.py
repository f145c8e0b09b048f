"""Does the model read time? Video QA on synthetic clips, trained through `visionllm-hf pretrain` and `train`.

u-LLaVA's video tokens average the vision features: over time (one spatial token per patch) and over space (one
temporal token per frame). Motion then shows only if a frame's averaged features change with where its shapes
are, i.e. if the tower's patch features say where they are, as a real CLIP's do. The default recipe builds such a
model offline, as `benches/learning.py` does for images, from stage 0:

0. `visionllm-hf synth` writes scenes and clips (`--clips`); `pretrain clip --region-positions` trains the demo
   tower as a CLIP on captions and on region texts that say where each shape is ("a red circle at the top
   left"); `pretrain llm` a Llama on the data's text; `build --preset demo` assembles them;
1. `train --stage v2-pretrain` on the clips (projector, LLM frozen), then `--stage v2-tune` (LLM and projector)
   with `--video_temporal_tokens frame_changes` (the temporal tokens carry how each frame changed);
2. a direction drill: `v2-tune` at twice the rate on the direction questions alone (1500, then 3000 steps: the
   LLM's loss sits at uniform for ~1000 steps before it starts to read the changes), then 1000 steps of step 1's
   `v2-tune` on every clip task again (the drill alone makes it forget the other answers).

`--recipe demo` instead tunes the shipped demo model (its tower's features barely move with position: see the
README) with step 1's `v2-tune` and u-LLaVA's temporal tokens (frame means); `train` adds the video tokens it
lacks. Then, on held-out clips: direction accuracy and counting exact match against chance, and the same model
with each clip's frames shuffled (a model that reads time loses direction, not counting). Last, `[SEG]` about
each clip's mover with a SAM 2 video tracker attached: the masklet's mean IoU with the truth (see `masklet_iou`).

    python benches/video.py [--recipe stage0|demo] [--train-clips 2000] [--eval-clips 200] [--steps 3000]
                            [--out outputs/video] [--smoke]
"""

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

from visionllm_hf.cli import main as cli
from visionllm_hf.demo import DEMO_MODEL
from visionllm_hf.synthetic.clips import DIRECTIONS, make_clip, shuffled

QUESTIONS = {
    "direction": "Which way does the {kind} move? Answer with one word.",
    "counting": "How many shapes appear in the video? Answer with a number.",
}


PRETRAINING = {"clip": 1500, "llm": 1500, "v2-pretrain": 800}  # steps (CLIP batches of 64, LLM of 32)
DRILL = [("direction", 1500, 40), ("direction", 3000, 40), ("clips", 1000, 20)]  # data, steps, rate scale


def train(out: Path, recipe: str, train_clips: int, steps: int, batch_size: int, fraction: float = 1.0) -> Path:
    """The recipe's model folder; `fraction` scales stage 0's steps (smoke runs)."""
    data = out / "data"
    scenes = 1 if recipe == "demo" else max(8, int(3000 * fraction))
    cli(["synth", "--out", str(data), "--num-images", str(scenes), "--clips", str(train_clips)])
    clips = f"conversation={data}/video_conversations.json"
    tune = ["--stage", "v2-tune", "--learning_rate_scale", "20", "--data", clips, "--max_steps", str(steps),
            "--per_device_train_batch_size", str(batch_size), "--logging_steps", str(max(steps // 10, 1)),
            "--save_strategy", "no", "--seed", "0"]
    if recipe == "demo":
        cli(["train", "--model", str(DEMO_MODEL), "--output_dir", str(out / "model"), *tune])
        return out / "model"
    step_counts = {name: str(max(2, int(count * fraction))) for name, count in PRETRAINING.items()}
    cli(["pretrain", "clip", "--captions", str(data / "captions.json"), "--instances", str(data / "instances.json"),
         "--images", str(data / "images"), "--region-positions", "--out", str(out / "clip"),
         "--steps", step_counts["clip"], "--batch-size", "64"])
    cli(["pretrain", "llm", "--text", str(data / "conversations.json"), str(data / "captions.json"),
         str(data / "video_conversations.json"), "--out", str(out / "llm"), "--steps", step_counts["llm"],
         "--batch-size", "32"])
    cli(["build", "--preset", "demo", "--vision", str(out / "clip"), "--llm", str(out / "llm"), "--out", str(out / "base")])
    cli(["train", "--model", str(out / "base"), "--stage", "v2-pretrain", "--data", clips, "--output_dir",
         str(out / "aligned"), "--max_steps", step_counts["v2-pretrain"], "--per_device_train_batch_size",
         str(batch_size), "--save_strategy", "no", "--seed", "0"])
    cli(["train", "--model", str(out / "aligned"), "--output_dir", str(out / "tuned"), *tune,
         "--video_temporal_tokens", "frame_changes"])
    records = json.loads((data / "video_conversations.json").read_text())
    (data / "direction.json").write_text(json.dumps([record for record in records if record["task"] == "video_qa"]))
    model = out / "tuned"
    for seed, (name, drill_steps, scale) in enumerate(DRILL):
        spec = clips if name == "clips" else f"conversation={data}/direction.json"
        cli(["train", "--model", str(model), "--output_dir", str(out / f"drill{seed}"), "--stage", "v2-tune",
             "--learning_rate_scale", str(scale), "--data", spec, "--max_steps", str(max(2, int(drill_steps * fraction))),
             "--per_device_train_batch_size", str(batch_size), "--save_strategy", "no", "--seed", str(seed)])
        model = out / f"drill{seed}"
    return model


def answers(model, processor, clips, question: str, frames_of, batch_size: int = 16) -> list[str]:
    """Greedy answers, one per clip, batched; `frames_of(clip)` gives the frames the model sees."""
    replies = []
    for start in range(0, len(clips), batch_size):
        batch = clips[start : start + batch_size]
        prompts = [
            processor.apply_chat_template([{"role": "user", "content": [
                {"type": "video"}, {"type": "text", "text": question.format(kind=clip.mover().kind)}]}],
                add_generation_prompt=True)
            for clip in batch
        ]
        inputs = processor(text=prompts, videos=[frames_of(clip) for clip in batch])
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        sequences = output.sequences if hasattr(output, "sequences") else output
        texts = processor.batch_decode(sequences[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        replies += [text.strip().strip(".").split(" ")[0].lower() if text.strip() else "" for text in texts]
    return replies


def evaluate(model_dir: Path, eval_clips: int) -> dict[str, float]:
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    clips = [make_clip(1, index) for index in range(eval_clips)]  # seed 1: never trained on
    rng = random.Random(0)
    shuffled_frames = {id(clip): shuffled(clip, rng) for clip in clips}
    truth = {"direction": [clip.direction() for clip in clips], "counting": [str(clip.count()) for clip in clips]}
    metrics = {}
    for name, question in QUESTIONS.items():
        for frames, frames_of in (("frames in order", lambda clip: clip.frames),
                                  ("frames shuffled", lambda clip: shuffled_frames[id(clip)])):
            replies = answers(model, processor, clips, question, frames_of)
            metrics[f"{name}, {frames}"] = sum(r == t for r, t in zip(replies, truth[name])) / len(clips)
    metrics["direction, chance"] = 1 / len(DIRECTIONS)
    counts = Counter(str(make_clip(0, index).count()) for index in range(500))  # the training clips' counts
    metrics["counting, most common count"] = sum(t == counts.most_common(1)[0][0] for t in truth["counting"]) / len(clips)
    return metrics


def masklet_iou(model_dir: Path, eval_clips: int) -> dict[str, float]:
    """
    `[SEG]` about each held-out clip's mover (answer forced to "<kind> [SEG]") with a SAM 2 video tracker attached:
    mean IoU of its per-frame masks with the truth. The tracker here is transformers' `Sam2VideoModel` at the
    tests' tiny size with random weights (no SAM 2 checkpoint can be downloaded on this machine), so the figure is
    the plumbing's, not SAM 2's; "truth on frame 0" prompts the tracker with the true first-frame mask instead, and
    "kept, no tracker" repeats that mask on every frame (what a tracker must beat while the shape moves).
    """
    from visionllm_hf.builder.presets import tiny_sam2_video_config
    from visionllm_hf.modeling.video_masklets import propagate_masklet
    from transformers import Sam2VideoModel

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    torch.manual_seed(0)
    model.video_mask_decoder = Sam2VideoModel(tiny_sam2_video_config(image_size=128)).eval()
    ious = {"[SEG] then tracker": [], "truth on frame 0 then tracker": [], "truth on frame 0 kept, no tracker": []}
    for index in range(eval_clips):
        clip = make_clip(1, index)
        prompt = processor.apply_chat_template([{"role": "user", "content": [
            {"type": "video"}, {"type": "text", "text": f"Segment the {clip.mover().kind}."}]}], add_generation_prompt=True)
        inputs = processor(text=[prompt], videos=[clip.frames])
        inputs["forced_answer_ids"] = torch.tensor([processor.answer_token_ids(f"{clip.mover().kind} [SEG]")])
        with torch.no_grad():
            outputs = model.generate(**inputs, max_new_tokens=8)
        objects = processor.post_process_generation(outputs, target_sizes=[(128, 128)])[0]["objects"]
        truth = [torch.from_numpy(mask) for mask in clip.mover().masks]
        frames = torch.stack([torch.from_numpy(np.array(frame)).permute(2, 0, 1) for frame in clip.frames]) / 255
        oracle, _ = propagate_masklet(model.video_mask_decoder, frames, truth[0])
        predictions = {"[SEG] then tracker": [torch.from_numpy(m) for m in objects[0]["video_masks"]],
                       "truth on frame 0 then tracker": list(oracle > 0.5),
                       "truth on frame 0 kept, no tracker": [truth[0]] * len(truth)}
        for name, masks in predictions.items():
            ious[name].append(sum(_iou(mask, true) for mask, true in zip(masks, truth)) / len(truth))
    return {f"masklet mean IoU, {name}": sum(values) / len(values) for name, values in ious.items()}


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum().clamp_min(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=("stage0", "demo"), default="stage0")
    parser.add_argument("--train-clips", type=int, default=2000)
    parser.add_argument("--eval-clips", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="outputs/video")
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few clips: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.train_clips, args.eval_clips, args.steps, args.batch_size = 8, 4, 2, 2
    out = Path(args.out)
    started = time.time()
    model_dir = train(out, args.recipe, args.train_clips, args.steps, args.batch_size, 0.002 if args.smoke else 1.0)
    trained = time.time()
    metrics = evaluate(model_dir, args.eval_clips)
    metrics.update(masklet_iou(model_dir, min(args.eval_clips, 50)))
    print(f"\nrecipe {args.recipe}: v2-tune {args.steps} steps of {args.batch_size} clips ({args.train_clips} "
          f"training clips){' and the direction drill' if args.recipe == 'stage0' else ''}, "
          f"{(trained - started) / 60:.1f} min in all; evaluation on {args.eval_clips} held-out clips")
    for name, value in metrics.items():
        print(f"{name:<32} {value:.3f}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
