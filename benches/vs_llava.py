"""Speed of VisionLLM against transformers' LLaVA, same sizes, same weights, same inputs, same process.

Both models are built with one small CLIP vision tower (hidden 256, 4 layers, 224 px, patch 14: 256 image
tokens) and one small Llama (hidden 512, 4 layers, vocab 1000). LLaVA gets random weights; ours loads them
through `load_state_dict(strict=True)`, and the logits of both on one input are compared once, so the timings
below compare code paths, not models. VisionLLM runs its plain VQA path: one tile, no global view.

Measured (float32, SDPA attention, fixed thread count, `torch.no_grad` except for training):

- prefill: one forward pass at batch 1 (vision tower + projector + LLM over the whole prompt);
- decode b1 / decode b4: greedy `generate` of `--new-tokens` tokens at batch 1 and at batch 4 (left-padded
  attention mask), reported as tokens generated per second (prefill included);
- train step: forward with labels, backward and one AdamW step at batch 2, models in train mode.

Runs alternate between the two models (ours, LLaVA, ours, LLaVA, ...) after warmup, and each value is the
median over `--repeats` runs (four times as many for the short prefill). Every ratio is ours_time / llava_time
(for tokens/s: llava_tok_s / ours_tok_s, the same thing), so lower is better and the goal is <= 1.05.

Run from the repository root:

    python benches/vs_llava.py [--repeats 9] [--new-tokens 32] [--threads 2] [--smoke]

`--smoke` runs the smallest sizes once (CI runs it so the bench cannot rot).
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from visionllm_hf import VisionLLMForConditionalGeneration
from visionllm_hf.builder.presets import make_config

GOAL = 1.05
VOCAB_SIZE = 1000
IMAGE_TOKEN_ID = VOCAB_SIZE - 1
PAD_TOKEN_ID = 0
TEXT_TOKENS = 16  # text tokens around the image in every prompt
WARMUP = 2
PREFILL_REPEAT_FACTOR = 4  # a prefill takes ~60 ms: more runs for the same noise as the longer metrics


SIZES = {  # the measured sizes, and the smallest ones for --smoke
    "full": {"vision_hidden": 256, "vision_layers": 4, "image_size": 224, "text_hidden": 512, "text_layers": 4},
    "smoke": {"vision_hidden": 32, "vision_layers": 2, "image_size": 56, "text_hidden": 64, "text_layers": 2},
}


def vision_config(sizes: dict) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=sizes["vision_hidden"],
        intermediate_size=4 * sizes["vision_hidden"],
        num_hidden_layers=sizes["vision_layers"],
        num_attention_heads=4,
        image_size=sizes["image_size"],
        patch_size=14,
    )


def text_config(sizes: dict) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=sizes["text_hidden"],
        intermediate_size=sizes["text_hidden"] * 43 // 16,
        num_hidden_layers=sizes["text_layers"],
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        pad_token_id=PAD_TOKEN_ID,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def build_models(sizes: dict) -> tuple[LlavaForConditionalGeneration, VisionLLMForConditionalGeneration]:
    """LLaVA with random weights, and ours with the same sizes and LLaVA's weights (strict loading)."""
    llava_config = LlavaConfig(
        vision_config=vision_config(sizes),
        text_config=text_config(sizes),
        image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=(sizes["image_size"] // 14) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    ours_config = make_config(
        vision_config(sizes),
        text_config(sizes),
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        min_tiles=1,
        max_tiles=1,
        use_global_view=False,
        region_encoder_type=None,  # LLaVA has no visual prompts: the same modules, key for key
    )
    assert ours_config.image_seq_length == llava_config.image_seq_length
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration._from_config(llava_config, attn_implementation="sdpa")
    ours = VisionLLMForConditionalGeneration._from_config(ours_config, attn_implementation="sdpa")
    # Both classes name their submodules model.vision_tower, model.multi_modal_projector, model.language_model
    # and lm_head, so the state dicts line up key for key.
    ours.load_state_dict(llava.state_dict(), strict=True)
    for model in (llava, ours):
        model.float().eval()
        model.generation_config.pad_token_id = PAD_TOKEN_ID
        for sub_config in (model.config.text_config, model.config.vision_config):
            assert sub_config._attn_implementation == "sdpa", sub_config._attn_implementation
    return llava, ours


def make_inputs(batch_size: int, model, seed: int = 0) -> dict[str, torch.Tensor]:
    """`batch_size` prompts of [text, image tokens, text], one image each, with a left-padded attention mask."""
    image_seq_length, image_size = model.config.image_seq_length, model.config.tile_size
    generator = torch.Generator().manual_seed(seed)
    half = TEXT_TOKENS // 2
    text = torch.randint(3, IMAGE_TOKEN_ID, (batch_size, TEXT_TOKENS), generator=generator)
    image = torch.full((batch_size, image_seq_length), IMAGE_TOKEN_ID)
    input_ids = torch.cat([text[:, :half], image, text[:, half:]], dim=1)
    attention_mask = torch.ones_like(input_ids)
    if batch_size > 1:  # left padding on the second row exercises the padded path
        input_ids[1, :2] = PAD_TOKEN_ID
        attention_mask[1, :2] = 0
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


@torch.no_grad()
def check_logits_match(llava, ours, inputs) -> float:
    llava_logits = llava(**inputs).logits
    ours_logits = ours(**inputs).logits
    return (llava_logits - ours_logits).abs().max().item()


def time_interleaved(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call for each named function, called in alternation after `WARMUP` rounds."""
    for _ in range(WARMUP):
        for run in runs.values():
            run()
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def prefill_runner(model, inputs) -> Callable[[], None]:
    @torch.no_grad()
    def run():
        model(**inputs, use_cache=True)

    return run


def generate_runner(model, inputs, new_tokens: int) -> Callable[[], None]:
    @torch.no_grad()
    def run():
        output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        assert output.shape[1] == inputs["input_ids"].shape[1] + new_tokens

    return run


def train_runner(model, inputs) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == IMAGE_TOKEN_ID, -100)
    labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)

    def run():
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def measure(llava, ours, repeats: int, new_tokens: int) -> list[tuple[str, str, float, float]]:
    """Rows of (metric, unit, llava_value, ours_value)."""
    rows = []

    inputs = make_inputs(1, ours)
    runs = {"ours": prefill_runner(ours, inputs), "llava": prefill_runner(llava, inputs)}
    times = time_interleaved(runs, repeats * PREFILL_REPEAT_FACTOR)
    rows.append(("prefill b1", "ms", times["llava"] * 1e3, times["ours"] * 1e3))

    for batch_size in (1, 4):
        inputs = make_inputs(batch_size, ours)
        runs = {"ours": generate_runner(ours, inputs, new_tokens), "llava": generate_runner(llava, inputs, new_tokens)}
        times = time_interleaved(runs, repeats)
        tokens = batch_size * new_tokens
        rows.append((f"decode b{batch_size}", "tok/s", tokens / times["llava"], tokens / times["ours"]))

    inputs = make_inputs(2, ours)
    llava.train()
    ours.train()
    try:
        times = time_interleaved({"ours": train_runner(ours, inputs), "llava": train_runner(llava, inputs)}, repeats)
    finally:
        llava.eval()
        ours.eval()
    rows.append(("train step b2", "ms", times["llava"] * 1e3, times["ours"] * 1e3))
    return rows


def time_ratio(unit: str, llava_value: float, ours_value: float) -> float:
    """ours_time / llava_time: lower is better whatever the unit."""
    return llava_value / ours_value if unit == "tok/s" else ours_value / llava_value


def report(rows: list[tuple[str, str, float, float]]):
    print(f"\n{'metric':<15}{'unit':<7}{'LLaVA':>11}{'ours':>11}{'ours_time/llava_time':>23}")
    for metric, unit, llava_value, ours_value in rows:
        ratio = time_ratio(unit, llava_value, ours_value)
        print(f"{metric:<15}{unit:<7}{llava_value:>11.2f}{ours_value:>11.2f}{ratio:>23.3f}")
    print()
    for metric, unit, llava_value, ours_value in rows:
        ratio = time_ratio(unit, llava_value, ours_value)
        verdict = "meets" if ratio <= GOAL else "MISSES"
        print(f"{metric}: ratio {ratio:.3f} {verdict} goal <= {GOAL}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per model and metric (median taken)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per decode run")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.new_tokens = 1, 4

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    llava, ours = build_models(SIZES["smoke" if args.smoke else "full"])
    seq = ours.config.image_seq_length
    diff = check_logits_match(llava, ours, make_inputs(2, ours, seed=1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {seq} image + {TEXT_TOKENS} text tokens")
    print(f"logits max |ours - LLaVA| = {diff:.2e}")
    assert diff < 1e-4, "the models disagree: the timings would not compare like with like"

    rows = measure(llava, ours, args.repeats, args.new_tokens)
    report(rows)
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
