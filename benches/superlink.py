"""Cost of the super link inside `generate`: LLM forward calls and wall time, routed answers vs plain text.

For answers holding 0, 1, 4 and 16 routing tokens (cycling through [DET], [SEG], [POSE], <LOC>), the tiny
preset is made to emit a fixed script of the same number of sampled tokens as a plain-text answer. A forward
hook on the LLM counts its calls. Printed per answer: LLM forwards with routing and without, extra forwards per
routing token (the goal is at most one; the design needs none except when the answer ends on a routing token),
and the time ratio routed / plain (routed time includes running the decoders on the collected states).

Run from the repository root:

    python benches/superlink.py [--tokens 48] [--repeats 5] [--smoke]
"""

import argparse
import statistics
import time

import numpy as np
import torch

from visionllm_hf.builder import build_tiny

ROUTING = ["[DET]", "[SEG]", "[POSE]", "<LOC>"]


class Script:
    """Logits processor forcing row 0 to sample `tokens`, then EOS."""

    def __init__(self, tokens: list[int], eos: int):
        self.tokens, self.eos, self.step = tokens, eos, 0

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.tokens[self.step] if self.step < len(self.tokens) else self.eos] = 0.0
        self.step += 1
        return forced


def answer_tokens(tokenizer, length: int, routing: int) -> list[int]:
    """`length` sampled tokens: a filler word repeated, with `routing` routing tokens spread through it."""
    filler = tokenizer.encode(" shape", add_special_tokens=False)[0]
    tokens = [filler] * length
    for index in range(routing):
        position = (index + 1) * length // (routing + 1)
        tokens[position] = tokenizer.convert_tokens_to_ids(ROUTING[index % len(ROUTING)])
    return tokens


def run(model, inputs, tokens, eos) -> tuple[int, float]:
    calls = []
    hook = model.model.language_model.register_forward_hook(lambda *args: calls.append(1))
    start = time.perf_counter()
    model.generate(**inputs, max_new_tokens=len(tokens) + 1, logits_processor=[Script(tokens, eos)])
    elapsed = time.perf_counter() - start
    hook.remove()
    return len(calls), elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=48, help="sampled tokens per answer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.tokens, args.repeats = 8, 1
    torch.set_num_threads(2)
    model, processor = build_tiny()
    model.eval()
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    inputs = processor(images=[image], text=["<image> Find everything."])
    eos = processor.tokenizer.eos_token_id
    print(f"tiny preset, 1 image, {args.tokens} sampled tokens per answer, median of {args.repeats} runs")
    print(f"{'routing':>8} {'forwards':>9} {'plain':>6} {'extra/route':>12} {'time ms':>8} {'plain ms':>9} {'ratio':>6}")
    for routing in (0, 1, 4) if args.smoke else (0, 1, 4, 16):
        routed_tokens = answer_tokens(processor.tokenizer, args.tokens, routing)
        plain_tokens = answer_tokens(processor.tokenizer, args.tokens, 0)
        routed_times, plain_times = [], []
        for _ in range(args.repeats + 1):  # the first round warms up
            routed_calls, routed_time = run(model, inputs, routed_tokens, eos)
            plain_calls, plain_time = run(model, inputs, plain_tokens, eos)
            routed_times.append(routed_time)
            plain_times.append(plain_time)
        routed_ms = statistics.median(routed_times[1:]) * 1e3
        plain_ms = statistics.median(plain_times[1:]) * 1e3
        extra = (routed_calls - plain_calls) / routing if routing else 0.0
        print(
            f"{routing:>8} {routed_calls:>9} {plain_calls:>6} {extra:>12.2f} {routed_ms:>8.1f} {plain_ms:>9.1f} "
            f"{routed_ms / plain_ms:>6.2f}"
        )


if __name__ == "__main__":
    main()
