"""Throughput of `visionllm_hf.prediction.predict`: images per second at batch 8 against batch 1.

The shipped demo model (`visionllm_hf.demo.DEMO_MODEL`, loaded with `AutoModel` / `AutoProcessor` as a hub user
loads it) runs a task over held-out synthetic scenes, end to end: reading the images, processing, `generate` with
the decoders, post-processing to pixels. Batches pad on the left. Prints images/s per batch size (the median of
the repeats, after one warm-up pass) and the ratio batch 8 / batch 1.

Run from the repository root:

    python benches/predict.py [--images 32] [--repeats 3] [--task detection] [--threads 2] [--smoke]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from visionllm_hf.demo import DEMO_MODEL, HELD_OUT_SEED
from visionllm_hf.prediction import predict, read_inputs
from visionllm_hf.synthetic import KINDS, write_dataset

BATCH_SIZES = (1, 8)


def images_per_second(model, processor, records, task: str, batch_size: int, repeats: int) -> float:
    """The median images/s of `repeats` passes over `records`, after one warm-up pass."""
    rates = []
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        results = list(predict(model, processor, records, task=task, categories=list(KINDS), prompt="How many shapes?",
                               batch_size=batch_size, max_new_tokens=32))
        elapsed = time.perf_counter() - start
        failed = [result["error"] for result in results if "error" in result]
        if failed:
            raise RuntimeError(f"{len(failed)} images failed: {failed[0]}")
        if repeat:
            rates.append(len(records) / elapsed)
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32, help="synthetic scenes per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--task", default="detection", help="any task of processing/tasks.py without regions")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:  # one thread too: two threads on cores busy with other jobs slow generation many times over
        args.images, args.repeats, args.threads = 8, 1, 1
    torch.set_num_threads(args.threads)
    model = AutoModel.from_pretrained(DEMO_MODEL, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(DEMO_MODEL, trust_remote_code=True)
    with tempfile.TemporaryDirectory() as folder:
        data = write_dataset(Path(folder), num_images=args.images, seed=HELD_OUT_SEED)
        records = read_inputs(data["images"]).records
        print(f"demo model, task {args.task}, {args.images} synthetic scenes per pass, {model.dtype} on "
              f"{model.device} ({torch.get_num_threads()} threads), median of {args.repeats}")
        print(f"{'batch':>5} {'images/s':>9}")
        rates = {}
        for batch_size in BATCH_SIZES:
            rates[batch_size] = images_per_second(model, processor, records, args.task, batch_size, args.repeats)
            print(f"{batch_size:>5} {rates[batch_size]:>9.2f}")
    print(f"batch 8 / batch 1: {rates[8] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
