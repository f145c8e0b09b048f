"""VisionLLM (v1) output-format-as-query: parallel decoding against autoregressive generation of the same tuples.

Both decode M = 100 objects of `<cls> <x1> <y1> <x2> <y2>` after the same prompt on the tiny v1 model: the parallel
path in one forward (`decode_objects`), the autoregressive path as 500 greedy steps with the KV cache (what
generating those tokens one by one costs). Prints the median times over a few repeats and the speed-up.

    python benches/v1_decoding.py [--objects 100] [--repeats 3] [--smoke]
"""

import argparse
import statistics
import time

import numpy as np
import torch

from visionllm_hf.builder.v1 import build_tiny_v1


def timed(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.objects, args.repeats = 10, 1
    torch.set_grad_enabled(False)
    model, processor = build_tiny_v1(seed=0, num_image_tokens=args.objects)
    model.eval()
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    inputs = processor(images=[image], text=["<image> Please detect <class> in the image."], categories=[["a", "b"]])
    fields = 5

    def parallel():
        return model.decode_objects(**inputs, num_fields=fields)

    def autoregressive():
        return model.generate(
            **inputs, max_new_tokens=args.objects * fields, min_new_tokens=args.objects * fields, do_sample=False
        )

    generated = autoregressive()
    assert generated.shape[1] - inputs["input_ids"].shape[1] == args.objects * fields
    parallel_time = timed(parallel, args.repeats)
    autoregressive_time = timed(autoregressive, args.repeats)
    print(f"M = {args.objects} objects x {fields} fields, tiny v1 model, CPU threads {torch.get_num_threads()}")
    print(f"parallel (output-format-as-query, 1 forward): {parallel_time * 1000:8.1f} ms")
    print(f"autoregressive ({args.objects * fields} tokens, KV cache):  {autoregressive_time * 1000:8.1f} ms")
    print(f"speed-up: {autoregressive_time / parallel_time:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
