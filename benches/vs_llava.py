"""Speed and memory of VisionLLM against transformers' LLaVA, same sizes, same weights, same inputs, same process.

Three models share one small CLIP vision tower (hidden 256, 4 layers, 224 px, patch 14: 256 image tokens) and one
small Llama (hidden 512, 4 layers, vocab 1000): LLaVA with random weights; ours without decoders (`ours`), loading
them with `load_state_dict(strict=True)`; and ours with the four perception decoders ([DET] [SEG] [POSE] <LOC>,
tiny decoders), loading the same weights (only the super link and the decoders are its own). The logits of all
three on one input are compared once, so the timings compare code paths, not models. Ours runs its plain VQA
path: one tile, no global view.

Rows (float32, SDPA attention, fixed thread count, `torch.no_grad` except for training):

- prefill b1: one forward pass at batch 1 (vision tower + projector + LLM over the whole prompt);
- decode b1 / b8: greedy `generate` of `--new-tokens` tokens at batch 1 and 8 (left-padded attention mask), in
  tokens generated per second, prefill included: transformers' `generate` on both models;
- decode b1 / b8 +decoders: the same with our model with decoders, whose `generate` is our super-link loop
  (`super_link_generation.py`), against transformers' `generate` on LLaVA. Both answer plain text: one logits
  processor, given to both, bans ids 990..999 (routing, `<query>`, `<image>`), so both produce the same tokens;
- decode b8 static +decoders: the same with `cache_implementation="static"` on both sides (with `--compile`, the
  decode step is also `torch.compile`d on both sides, as transformers' `generate` does on a GPU);
- train step b2: forward with labels, backward and one AdamW step at batch 2, models in train mode;
- peak memory decode b8 / train step b2: the most memory the call allocated above what was allocated before it
  (on CPU: the peak resident size of a forked child running the call, above its size at the fork; on a GPU:
  `torch.cuda.max_memory_allocated`), in MiB.

Runs alternate between the two models (ours, LLaVA, ours, LLaVA, ...) after warmup, and each value is the median
over `--repeats` runs (four times as many for the short prefill). Every ratio is ours / LLaVA in time or memory
(for tokens/s: llava_tok_s / ours_tok_s, the same thing), so lower is better and the goal is <= 1.00 (ours no
slower, no bigger); with timing noise, a ratio within 1.05 is quoted as "within noise".

Then batched generation with routing tokens: our model with decoders answers a fixed script of `--new-tokens`
tokens holding one routing token every 8 tokens ([DET], [SEG], [POSE], <LOC> in turn), each row its own answer,
decoders run on every routing token; images/s at batch 8 against batch 1 (alternating, medians). The goal is
>= 4x on a GPU; on a CPU the matrix products already use every core at batch 1, so the ratio is quoted.

Run from the repository root:

    python benches/vs_llava.py [--repeats 9] [--new-tokens 32] [--threads 2] [--device cpu] [--compile] [--smoke]

`--smoke` runs the smallest sizes once (CI runs it so the bench cannot rot).
"""

import argparse
import ctypes
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import date

import torch
from transformers import CLIPVisionConfig, CompileConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from visionllm_hf import VisionLLMForConditionalGeneration
from visionllm_hf.builder.presets import make_config, tiny_detector_config, tiny_sam_config

GOAL = 1.00
NOISE = 1.05  # ratios up to this are within the run-to-run noise of a shared machine
BATCH_GOAL = 4.0  # images/s at batch 8 over batch 1 with routing tokens (on a GPU)
VOCAB_SIZE = 1000
IMAGE_TOKEN_ID = VOCAB_SIZE - 1
FIRST_SPECIAL_ID = 990  # ids 990..999 are our special tokens: never in prompts, banned in plain-text answers
SPECIAL_TOKEN_IDS = {"det_token_id": 990, "seg_token_id": 991, "pose_token_id": 992, "loc_token_id": 993,
                     "query_token_id": 994}
ROUTING_SCRIPT = (990, 991, 992, 993)  # [DET] [SEG] [POSE] <LOC>, in turn
FILLER_TOKEN_ID = 100
ROUTING_EVERY = 8
PAD_TOKEN_ID = 0
EOS_TOKEN_ID = 2
TEXT_TOKENS = 16  # text tokens around the image in every prompt
WARMUP = 2
PREFILL_REPEAT_FACTOR = 4  # a prefill takes ~60 ms: more runs for the same noise as the longer metrics
MIB = 2**20


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
        eos_token_id=EOS_TOKEN_ID,
        tie_word_embeddings=False,
    )


def build_models(sizes: dict, device: str = "cpu"):
    """
    LLaVA with random weights; ours with the same sizes and LLaVA's weights (strict loading); ours with decoders,
    loading the same weights (everything but its super link and decoders).
    """
    llava_config = LlavaConfig(
        vision_config=vision_config(sizes),
        text_config=text_config(sizes),
        image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=(sizes["image_size"] // 14) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    common = dict(
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        min_tiles=1,
        max_tiles=1,
        use_global_view=False,
        region_encoder_type=None,  # LLaVA has no visual prompts: the same modules, key for key
    )
    ours_config = make_config(vision_config(sizes), text_config(sizes), **common)
    linked_config = make_config(
        vision_config(sizes),
        text_config(sizes),
        routing_decoders={"det": "object", "seg": "mask", "pose": "keypoint", "loc": "box"},
        mask_decoder_config=tiny_sam_config(),
        object_decoder_config=tiny_detector_config(),
        **SPECIAL_TOKEN_IDS,
        **common,
    )
    assert ours_config.image_seq_length == llava_config.image_seq_length
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration._from_config(llava_config, attn_implementation="sdpa")
    ours = VisionLLMForConditionalGeneration._from_config(ours_config, attn_implementation="sdpa")
    # the LLM and the vision tower take SDPA by default; the decoders (Grounding DINO has no SDPA) keep eager
    linked = VisionLLMForConditionalGeneration._from_config(linked_config)
    # Both classes name their submodules model.vision_tower, model.multi_modal_projector, model.language_model
    # and lm_head, so the state dicts line up key for key.
    ours.load_state_dict(llava.state_dict(), strict=True)
    missing, unexpected = linked.load_state_dict(llava.state_dict(), strict=False)
    assert not unexpected and all(key.startswith(("decoders.", "model.super_link.")) for key in missing), missing
    for model in (llava, ours, linked):
        model.to(device).float().eval()
        model.generation_config.pad_token_id = PAD_TOKEN_ID
        model.generation_config.eos_token_id = EOS_TOKEN_ID
        for sub_config in (model.config.text_config, model.config.vision_config):
            assert sub_config._attn_implementation == "sdpa", sub_config._attn_implementation
    return llava, ours, linked


def make_inputs(batch_size: int, model, seed: int = 0) -> dict[str, torch.Tensor]:
    """`batch_size` prompts of [text, image tokens, text], one image each, with a left-padded attention mask."""
    image_seq_length, image_size = model.config.image_seq_length, model.config.tile_size
    generator = torch.Generator().manual_seed(seed)
    half = TEXT_TOKENS // 2
    text = torch.randint(3, FIRST_SPECIAL_ID, (batch_size, TEXT_TOKENS), generator=generator)
    image = torch.full((batch_size, image_seq_length), IMAGE_TOKEN_ID)
    input_ids = torch.cat([text[:, :half], image, text[:, half:]], dim=1)
    attention_mask = torch.ones_like(input_ids)
    if batch_size > 1:  # left padding on the second row exercises the padded path
        input_ids[1, :2] = PAD_TOKEN_ID
        attention_mask[1, :2] = 0
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
    return {key: value.to(model.device) for key, value in inputs.items()}


class PlainText:
    """Logits processor banning ids 990..999 (routing, `<query>`, `<image>`): a plain-text answer, on any model."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, FIRST_SPECIAL_ID:] = -float("inf")
        return scores


class Script:
    """Logits processor forcing every row to sample `tokens` in order, then EOS."""

    def __init__(self, tokens: list[int]):
        self.tokens, self.step = tokens, 0

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.tokens[self.step] if self.step < len(self.tokens) else EOS_TOKEN_ID] = 0.0
        self.step += 1
        return forced


def routed_answer(length: int) -> list[int]:
    """`length` tokens: filler with a routing token every `ROUTING_EVERY` tokens."""
    tokens = [FILLER_TOKEN_ID] * length
    for index, position in enumerate(range(ROUTING_EVERY - 1, length, ROUTING_EVERY)):
        tokens[position] = ROUTING_SCRIPT[index % len(ROUTING_SCRIPT)]
    return tokens


@torch.no_grad()
def check_logits_match(llava, ours, linked, inputs) -> float:
    llava_logits = llava(**inputs).logits
    return max((llava_logits - model(**inputs).logits).abs().max().item() for model in (ours, linked))


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(runs: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call for each named function, called in alternation after `WARMUP` rounds."""
    for _ in range(WARMUP):
        for run in runs.values():
            run()
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def peak_memory(run: Callable[[], None], device: torch.device) -> float:
    """
    MiB the call allocates at its peak above what was allocated before it, after one warm-up call (lazily made
    state such as optimizer moments is not the call's own). On a CPU the call runs in a forked child, so call this
    before the parent process runs any backward pass or compiles anything (neither survives a fork).
    """
    if device.type == "cuda":
        run()
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / MIB
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read)
            torch.set_num_threads(1)  # OpenMP pools do not survive a fork
            run()
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap the call could reuse unseen goes back first
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # resets the peak resident size to the current one
            before = _resident_kib("VmRSS")
            run()
            os.write(write, str(max(_resident_kib("VmHWM") - before, 0) * 1024).encode())
        except BaseException as error:  # noqa: BLE001  (reported by the parent)
            os.write(write, f"error: {error!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        value = pipe.read()
    os.waitpid(child, 0)
    if not value.isdigit():
        raise RuntimeError(f"measuring peak memory in a forked child failed: {value or 'no answer'}")
    return int(value) / MIB


def _resident_kib(field: str) -> int:
    """`VmRSS` (resident now) or `VmHWM` (peak resident) of this process, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def prefill_runner(model, inputs) -> Callable[[], None]:
    @torch.no_grad()
    def run():
        model(**inputs, use_cache=True)

    return run


def generate_runner(model, inputs, new_tokens: int, **options) -> Callable[[], None]:
    @torch.no_grad()
    def run():
        output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                **options)
        sequences = output if torch.is_tensor(output) else output.sequences
        assert sequences.shape[1] == inputs["input_ids"].shape[1] + new_tokens

    return run


def train_runner(model, inputs) -> Callable[[], None]:
    # learning rate 0: the same work as any step, and the weights stay the ones the other rows compare
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == IMAGE_TOKEN_ID, -100)
    labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)

    def run():
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def check_same_answers(llava, linked, inputs, new_tokens: int):
    """Our loop and transformers' `generate` give the same plain-text tokens on the same weights."""
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    with torch.no_grad():
        expected = llava.generate(**inputs, **options, logits_processor=[PlainText()])
        ours = linked.generate(**inputs, **options, logits_processor=[PlainText()]).sequences
    assert torch.equal(expected, ours), "our loop and transformers' generate disagree on plain-text answers"


def static_options(compile_decode: bool) -> dict:
    options = {"cache_implementation": "static"}
    if compile_decode:
        compile_config = CompileConfig(fullgraph=False, dynamic=False)
        compile_config._compile_all_devices = True  # transformers compiles on CUDA only unless told so
        options["compile_config"] = compile_config
    else:
        options["disable_compile"] = True
    return options


def measure(llava, ours, linked, repeats: int, new_tokens: int, compile_decode: bool):
    """Rows of (metric, unit, llava_value, ours_value)."""
    device = ours.device
    plain = {"logits_processor": [PlainText()]}
    memory_rows = []  # first: on a CPU they fork, which must come before any backward pass or compilation
    inputs = make_inputs(8, linked)
    decode = {"ours": generate_runner(linked, inputs, new_tokens, **plain),
              "llava": generate_runner(llava, inputs, new_tokens, **plain)}
    memory = {name: peak_memory(run, device) for name, run in decode.items()}
    memory_rows.append(("peak mem decode b8 +decoders", "MiB", memory["llava"], memory["ours"]))
    inputs = make_inputs(2, ours)
    with train_mode(llava, ours):
        train = {"ours": train_runner(ours, inputs), "llava": train_runner(llava, inputs)}
        memory = {name: peak_memory(run, device) for name, run in train.items()}
    memory_rows.append(("peak mem train step b2", "MiB", memory["llava"], memory["ours"]))

    rows = []
    inputs = make_inputs(1, ours)
    runs = {"ours": prefill_runner(ours, inputs), "llava": prefill_runner(llava, inputs)}
    times = time_interleaved(runs, repeats * PREFILL_REPEAT_FACTOR, device)
    rows.append(("prefill b1", "ms", times["llava"] * 1e3, times["ours"] * 1e3))

    for batch_size in (1, 8):
        inputs = make_inputs(batch_size, ours)
        runs = {"ours": generate_runner(ours, inputs, new_tokens), "llava": generate_runner(llava, inputs, new_tokens)}
        times = time_interleaved(runs, repeats, device)
        tokens = batch_size * new_tokens
        rows.append((f"decode b{batch_size}", "tok/s", tokens / times["llava"], tokens / times["ours"]))

    for batch_size, label, options in ((1, "", {}), (8, "", {}), (8, " static", static_options(compile_decode))):
        inputs = make_inputs(batch_size, linked)
        check_same_answers(llava, linked, inputs, new_tokens)
        runs = {
            "ours": generate_runner(linked, inputs, new_tokens, **plain, **options),
            "llava": generate_runner(llava, inputs, new_tokens, **plain, **options),
        }
        times = time_interleaved(runs, repeats, device)
        tokens = batch_size * new_tokens
        rows.append((f"decode b{batch_size}{label} +decoders", "tok/s", tokens / times["llava"], tokens / times["ours"]))

    inputs = make_inputs(2, ours)
    with train_mode(llava, ours):
        train = {"ours": train_runner(ours, inputs), "llava": train_runner(llava, inputs)}
        times = time_interleaved(train, repeats, device)
    rows.append(("train step b2", "ms", times["llava"] * 1e3, times["ours"] * 1e3))
    return rows + memory_rows


@contextmanager
def train_mode(*models):
    for model in models:
        model.train()
    try:
        yield
    finally:
        for model in models:
            model.eval()


def routed_runner(linked, inputs, answer: list[int]) -> Callable[[], None]:
    batch_size = inputs["input_ids"].shape[0]
    size = linked.config.decoder_image_size
    decoder_pixel_values = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def run():
        output = linked.generate(**inputs, decoder_pixel_values=decoder_pixel_values.to(linked.device),
                                 max_new_tokens=len(answer) + 1, logits_processor=[Script(answer)])
        assert all(len(row) == len(answer) // ROUTING_EVERY for row in output.results)

    return run


def measure_routed_batches(linked, repeats: int, new_tokens: int) -> tuple[float, float]:
    """Images/s of generation with routing tokens (decoders included) at batch 1 and at batch 8."""
    answer = routed_answer(max(new_tokens, ROUTING_EVERY))
    runs = {f"b{size}": routed_runner(linked, make_inputs(size, linked), answer) for size in (1, 8)}
    times = time_interleaved(runs, repeats, linked.device)
    return 1 / times["b1"], 8 / times["b8"]


def time_ratio(unit: str, llava_value: float, ours_value: float) -> float:
    """ours / LLaVA in time or memory: lower is better whatever the unit."""
    return llava_value / ours_value if unit == "tok/s" else ours_value / llava_value


def verdict(ratio: float) -> str:
    if ratio <= GOAL:
        return "meets"
    return "within noise of" if ratio <= NOISE else "MISSES"


def report(rows: list[tuple[str, str, float, float]], routed: tuple[float, float]):
    print(f"\n{'metric':<30}{'unit':<7}{'LLaVA':>11}{'ours':>11}{'ours/LLaVA':>12}")
    for metric, unit, llava_value, ours_value in rows:
        ratio = time_ratio(unit, llava_value, ours_value)
        print(f"{metric:<30}{unit:<7}{llava_value:>11.2f}{ours_value:>11.2f}{ratio:>12.3f}")
    print()
    for metric, unit, llava_value, ours_value in rows:
        ratio = time_ratio(unit, llava_value, ours_value)
        print(f"{metric}: ratio {ratio:.3f} {verdict(ratio)} goal <= {GOAL:.2f}")
    batch_1, batch_8 = routed
    print(f"\nrouted generate, images/s: batch 1 {batch_1:.2f}, batch 8 {batch_8:.2f}")
    print(f"routed batch 8 / batch 1: {batch_8 / batch_1:.2f}x (goal >= {BATCH_GOAL:.0f}x on a GPU)")


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per model and metric (median taken)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per decode run")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--compile", action="store_true", help="torch.compile the static-cache decode step (both)")
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.new_tokens = 1, 8

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    llava, ours, linked = build_models(SIZES["smoke" if args.smoke else "full"], args.device)
    device = ours.device
    seq = ours.config.image_seq_length
    diff = check_logits_match(llava, ours, linked, make_inputs(2, ours, seed=1))
    print(f"{date.today()}, {machine(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{seq} image + {TEXT_TOKENS} text tokens, {args.new_tokens} new tokens, median of {args.repeats}")
    print(f"logits max |ours - LLaVA| = {diff:.2e}")
    assert diff < 1e-4, "the models disagree: the timings would not compare like with like"

    rows = measure(llava, ours, linked, args.repeats, args.new_tokens, args.compile)
    routed = measure_routed_batches(linked, args.repeats, args.new_tokens)
    report(rows, routed)
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
