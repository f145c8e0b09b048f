"""Real-size VisionLLM v2 on a GPU against LLaVA at the same size: prefill, decode tokens/s, bandwidth use.

The paper's architecture (002), from `visionllm_hf.builder.presets.visionllm_v2_config`: CLIP ViT-L/14 at 336 px,
a 7B Llama-shaped LLM (Vicuna-7B v1.5 sizes), dynamic resolution (a 4:3 image -> 2x2 tiles + a global view, 2880
image tokens), the region encoder, and the four perception decoders behind [DET] [SEG] [POSE] <LOC> (Grounding
DINO with its default Swin-T backbone, SAM's default ViT-B, the box MLP). LLaVA-1.5 is the same tower, projector and
LLM; it gets the same 2880 image tokens as five 576-token images, so both run the same sequence.

Built correct by construction: both models are made on the meta device (no memory, no initialisation), moved to
the GPU with `to_empty`, every parameter and buffer filled with a sentinel (NaN, or -1 for integer buffers), then
initialised there by transformers' own `init_weights` (which also writes buffers such as the rotary
frequencies and CLIP's position ids), all in bfloat16. Parameters transformers leaves alone (our super-link
queries, the region encoder's norms) are initialised here and named; a buffer still holding the sentinel stops the
run. Ours then loads LLaVA's weights for every module they share, so both produce the same tokens.

Measured, alternating the two models, medians of `--repeats` (CUDA synchronised around each call):

- prefill b1: one forward over the whole prompt (vision tower on 5 tiles + projector + LLM), ms;
- decode b1 / b8: greedy generation of `--new-tokens` plain-text tokens (one logits processor bans our special
  ids for both); tokens/s end to end, and the decode rate alone, (N - 1) / (t(N tokens) - t(1 token)) in steps/s;
  ours is its super-link loop, LLaVA transformers' `generate`; with `--compile`, again with
  `cache_implementation="static"`, where both compile the decode step (transformers' rule on CUDA);
- bandwidth: bytes a decode step must read (the LLM's and LM head's weights, plus the KV cache at the mean context
  length) x decode steps/s / peak memory bandwidth (a table by GPU name, or `--peak-bandwidth` in TB/s).

Run from the repository root on a machine with a GPU:

    python benches/gpu.py [--new-tokens 64] [--repeats 5] [--compile] [--peak-bandwidth 4.8]

`--smoke` runs the same code path at tiny sizes on the CPU in float32 (CI runs it so the script cannot rot).
"""

import argparse
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
from transformers import (
    CompileConfig,
    GroundingDinoConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SamConfig,
)

from visionllm_hf import VisionLLMForConditionalGeneration
from visionllm_hf.builder.presets import make_config, tiny_detector_config, tiny_sam_config, visionllm_v2_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_llava  # noqa: E402  (the tiny sizes of the smoke run)
from vs_llava import time_interleaved  # noqa: E402  (alternating runs, medians, device synchronised)

# Peak memory bandwidth in TB/s by GPU name (the first listed name found in the device's name wins)
PEAK_BANDWIDTH_TB_S = (
    ("GH200", 4.0),
    ("H200", 4.8),
    ("H100 NVL", 3.9),
    ("H100 PCIe", 2.0),
    ("H100", 3.35),  # SXM
    ("H800", 3.35),
    ("B200", 8.0),
    ("A100-SXM4-80GB", 2.039),
    ("A100 80GB PCIe", 1.935),
    ("A100", 1.555),  # 40 GB
    ("L40S", 0.864),
    ("L40", 0.864),
    ("A10G", 0.6),
    ("A10", 0.6),
    ("L4", 0.3),
    ("RTX 4090", 1.008),
    ("RTX 3090", 0.936),
    ("T4", 0.32),
)
TEXT_TOKENS = 32  # text tokens around the image block in every prompt
ROUTING_NAMES = {"det": "object", "seg": "mask", "pose": "keypoint", "loc": "box"}


def real_size_configs() -> tuple[LlavaConfig, object]:
    """VisionLLM v2 at the paper's sizes with its four perception decoders, and LLaVA with the same parts."""
    preset = visionllm_v2_config()
    token_ids = {name: getattr(preset, name) for name in preset.to_dict() if name.endswith("_token_id")}
    ours = make_config(
        preset.vision_config,
        preset.text_config,
        max_tiles=4,
        routing_decoders=dict(ROUTING_NAMES),
        mask_decoder_config=SamConfig(),  # ViT-B image encoder, 1024 px
        object_decoder_config=GroundingDinoConfig(),  # Swin-T backbone
        **token_ids,
    )
    return llava_config_for(ours), ours


def smoke_configs() -> tuple[LlavaConfig, object]:
    """The same composition at vs_llava's smoke sizes (CPU, seconds)."""
    sizes = vs_llava.SIZES["smoke"]
    ours = make_config(
        vs_llava.vision_config(sizes),
        vs_llava.text_config(sizes),
        image_token_id=vs_llava.IMAGE_TOKEN_ID,
        region_token_id=vs_llava.IMAGE_TOKEN_ID - 1,
        max_tiles=4,
        region_conv_channels=[8, 16],
        routing_decoders=dict(ROUTING_NAMES),
        mask_decoder_config=tiny_sam_config(),
        object_decoder_config=tiny_detector_config(),
        **vs_llava.SPECIAL_TOKEN_IDS,
    )
    return llava_config_for(ours), ours


def llava_config_for(ours) -> LlavaConfig:
    return LlavaConfig(
        vision_config=ours.vision_config,
        text_config=ours.text_config,
        image_token_index=ours.image_token_id,
        image_seq_length=ours.image_seq_length,
        vision_feature_layer=ours.vision_feature_layer,
        vision_feature_select_strategy=ours.vision_feature_select_strategy,
        projector_hidden_act=ours.projector_hidden_act,
    )


def materialise(model_class, config, device: torch.device, dtype: torch.dtype):
    """Build on the meta device, `to_empty` on `device`, fill with sentinels, initialise there; returns the model."""
    with torch.device("meta"):
        model = model_class._from_config(config, dtype=dtype)
    model.to_empty(device=device)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.fill_(float("nan") if tensor.is_floating_point() else -1 if tensor.dtype != torch.bool else False)
        model.init_weights()  # transformers' initialisers: every standard layer, rotary and position-id buffers
        own = []
        for name, parameter in model.named_parameters():
            if parameter.isnan().any():  # a parameter of our own modules: norms at 1 / 0, the rest N(0, 0.02)
                if parameter.dim() == 1 and name.endswith("weight"):
                    parameter.fill_(1.0)
                elif parameter.dim() == 1:
                    parameter.zero_()
                else:
                    parameter.normal_(0.0, 0.02)
                own.append(name)
        stale = [name for name, buffer in model.named_buffers()
                 if buffer.dtype != torch.bool and (buffer.isnan().any() if buffer.is_floating_point() else (buffer == -1).all())]
    if stale:
        raise RuntimeError(f"{model_class.__name__}: buffers left uninitialised after to_empty: {stale}")
    model.eval()
    return model, own


def build(smoke: bool, device: torch.device, dtype: torch.dtype):
    llava_config, ours_config = smoke_configs() if smoke else real_size_configs()
    llava, _ = materialise(LlavaForConditionalGeneration, llava_config, device, dtype)
    ours, own = materialise(VisionLLMForConditionalGeneration, ours_config, device, dtype)
    missing, unexpected = ours.load_state_dict(llava.state_dict(), strict=False)
    assert not unexpected, unexpected
    shared_prefixes = ("model.vision_tower.", "model.multi_modal_projector.", "model.language_model.", "lm_head.")
    assert not [key for key in missing if key.startswith(shared_prefixes)], "ours misses shared weights"
    pad_id = ours_config.text_config.pad_token_id or 0
    for model in (llava, ours):
        model.generation_config.pad_token_id = pad_id
        model.generation_config.eos_token_id = ours_config.text_config.eos_token_id
    return llava, ours, own


def make_inputs(ours, batch_size: int, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
    """Ours: one 4:3 image as 2x2 tiles + global view; LLaVA: the same 5 tiles as 5 images. Same token ids."""
    config = ours.config
    generator = torch.Generator().manual_seed(0)
    grid = [2, 2] if config.max_tiles >= 4 else [1, 1]
    tiles = grid[0] * grid[1] + int(config.use_global_view)
    first_special = min(config.special_token_ids())
    text = torch.randint(3, first_special, (batch_size, TEXT_TOKENS), generator=generator)
    image = torch.full((batch_size, tiles * config.image_seq_length), config.image_token_id)
    half = TEXT_TOKENS // 2
    input_ids = torch.cat([text[:, :half], image, text[:, half:]], dim=1)
    attention_mask = torch.ones_like(input_ids)
    if batch_size > 1:  # left padding
        input_ids[1, :2] = config.text_config.pad_token_id or 0
        attention_mask[1, :2] = 0
    size = config.tile_size
    pixel_values = torch.randn(batch_size * tiles, 3, size, size, generator=generator)
    common = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    pixels = pixel_values.to(device, dtype)
    ours_inputs = {**common, "pixel_values": pixels, "image_grids": torch.tensor([grid] * batch_size, device=device)}
    return ours_inputs, {**common, "pixel_values": pixels}


class PlainText:
    """Bans our special ids (routing, `<query>`, `<image>`, `<region>`, pad) for both models: plain-text answers."""

    def __init__(self, first_special: int):
        self.first_special = first_special

    def __call__(self, input_ids, scores):
        scores[:, self.first_special :] = -float("inf")
        return scores


def generate_runner(model, inputs, new_tokens: int, first_special: int, **options) -> Callable[[], None]:
    @torch.no_grad()
    def run():
        output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                logits_processor=[PlainText(first_special)], **options)
        sequences = output if torch.is_tensor(output) else output.sequences
        assert sequences.shape[1] == inputs["input_ids"].shape[1] + new_tokens

    return run


def prefill_runner(model, inputs) -> Callable[[], None]:
    @torch.no_grad()
    def run():
        model(**inputs, use_cache=True, logits_to_keep=1)

    return run


def decode_bytes(ours, batch_size: int, context: int, dtype: torch.dtype) -> int:
    """Bytes one decode step reads: the LLM's and LM head's weights, and the KV cache over `context` tokens."""
    text = ours.config.text_config
    element = torch.finfo(dtype).bits // 8
    weights = sum(p.numel() for p in ours.model.language_model.parameters()) + ours.lm_head.weight.numel()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * context * batch_size
    return (weights + kv) * element


def peak_bandwidth(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override * 1e12, f"{override} TB/s (given)"
    if device.type != "cuda":
        return None, "no GPU: not applicable"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BANDWIDTH_TB_S:
        if key in name:
            return value * 1e12, f"{value} TB/s ({key}, from the table)"
    return None, f"'{name}' is not in the table: pass --peak-bandwidth"


def measure(llava, ours, args, device, dtype) -> list[tuple]:
    """Rows of (metric, unit, llava_value, ours_value)."""
    first_special = min(ours.config.special_token_ids())
    rows = []
    ours_inputs, llava_inputs = make_inputs(ours, 1, device, dtype)
    times = time_interleaved({"ours": prefill_runner(ours, ours_inputs), "llava": prefill_runner(llava, llava_inputs)},
                             args.repeats, device)
    rows.append(("prefill b1", "ms", times["llava"] * 1e3, times["ours"] * 1e3))
    modes = [("", {})]
    if args.compile:
        modes.append((" static+compile", {"cache_implementation": "static", "compile_config": CompileConfig()}))
    for label, options in modes:
        for batch_size in (1, 8):
            ours_inputs, llava_inputs = make_inputs(ours, batch_size, device, dtype)
            runs = {}
            for tokens in (1, args.new_tokens):
                runs[f"ours{tokens}"] = generate_runner(ours, ours_inputs, tokens, first_special, **options)
                runs[f"llava{tokens}"] = generate_runner(llava, llava_inputs, tokens, first_special, **options)
            times = time_interleaved(runs, args.repeats, device)
            total = batch_size * args.new_tokens
            rows.append((f"decode b{batch_size}{label}", "tok/s", total / times[f"llava{args.new_tokens}"],
                         total / times[f"ours{args.new_tokens}"]))
            steps = {name: (args.new_tokens - 1) / max(times[f"{name}{args.new_tokens}"] - times[f"{name}1"], 1e-9)
                     for name in ("llava", "ours")}
            rows.append((f"decode-only b{batch_size}{label}", "steps/s", steps["llava"], steps["ours"]))
    return rows


def report(rows, ours, args, device, dtype):
    print(f"\n{'metric':<30}{'unit':<9}{'LLaVA':>11}{'ours':>11}{'ours/LLaVA time':>17}")
    for metric, unit, llava_value, ours_value in rows:
        ratio = ours_value / llava_value if unit == "ms" else llava_value / ours_value
        print(f"{metric:<30}{unit:<9}{llava_value:>11.2f}{ours_value:>11.2f}{ratio:>17.3f}")
    bandwidth, source = peak_bandwidth(device, args.peak_bandwidth)
    prompt = make_inputs(ours, 1, torch.device("cpu"), dtype)[0]["input_ids"].shape[1]
    context = prompt + args.new_tokens // 2
    print(f"\npeak bandwidth: {source}; decode step reads the LLM + LM head weights and the KV cache at "
          f"{context} tokens of context")
    for metric, unit, llava_value, ours_value in rows:
        if unit != "steps/s":
            continue
        batch_size = int(metric.split(" b")[1].split()[0])
        step_bytes = decode_bytes(ours, batch_size, context, dtype)
        if bandwidth is None:
            print(f"{metric}: {step_bytes / 1e9:.2f} GB per step; bandwidth fraction n/a")
            continue
        fractions = [value * step_bytes / bandwidth for value in (llava_value, ours_value)]
        print(f"{metric}: {step_bytes / 1e9:.2f} GB per step; bandwidth fraction LLaVA {fractions[0]:.1%}, "
              f"ours {fractions[1]:.1%}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also static cache + torch.compile'd decode (both)")
    parser.add_argument("--peak-bandwidth", type=float, default=None, help="TB/s; default: from the GPU's name")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU in float32 (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.new_tokens, args.repeats = 4, 1
        device, dtype = torch.device("cpu"), torch.float32
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("benches/gpu.py measures the real-size model on a GPU; use --smoke on a CPU")
        device, dtype = torch.device("cuda"), torch.bfloat16
    start = time.perf_counter()
    llava, ours, own = build(args.smoke, device, dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    parameters = sum(p.numel() for p in ours.parameters())
    print(f"{date.today()}, {name}, torch {torch.__version__}, {dtype}, ours {parameters / 1e9:.2f} B parameters, "
          f"{args.new_tokens} new tokens, median of {args.repeats}; built in {time.perf_counter() - start:.1f} s")
    print(f"initialised here (transformers leaves them): {', '.join(own) or 'none'}")
    with torch.no_grad():  # the same weights and the same tokens: the same logits
        ours_inputs, llava_inputs = make_inputs(ours, 1, device, dtype)
        difference = (ours(**ours_inputs, logits_to_keep=1).logits.float()
                      - llava(**llava_inputs, logits_to_keep=1).logits.float()).abs().max().item()
    print(f"last-token logits max |ours - LLaVA| = {difference:.2e}")
    rows = measure(llava, ours, args, device, dtype)
    report(rows, ours, args, device, dtype)
    if device.type == "cuda":
        print(f"\npeak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
