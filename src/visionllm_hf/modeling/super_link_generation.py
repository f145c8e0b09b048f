"""Generation with the super link: decoders run inside `generate`, with the KV cache, on batches.

Each step samples one token per row. A row that samples a routing token feeds it *together with its N
`<query>` tokens* in the next forward, so the queries enter the KV cache exactly where training puts them and
every later token attends to them; the states the decoders need come out of that same forward, which had to
run anyway to produce the next token. Rows of a batch that feed fewer tokens in a step are filled with masked
padding (attention mask 0, positions not advanced), so each row computes what it would compute alone.

Only when a routing token is the very last sampled token (`max_new_tokens` reached, or every other row has
finished) does one extra forward run, to collect its states; its decoder still runs.

Per step the host waits on the device once (for the chunk's width, whether it routes, whether every row is done);
the chunk, positions and masks are built with tensor code, and a plain-text step runs the LLM and the LM head on
one column per row, as transformers' `generate` does. With `cache_implementation="static"` that decode step can be
compiled (see `generate_with_super_link`).

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and transformers.
"""

import copy
import warnings
from dataclasses import dataclass

import torch
from transformers import CompileConfig, GenerationConfig
from transformers.cache_utils import StaticCache
from transformers.generation import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.masking_utils import create_masks_for_generate
from transformers.modeling_outputs import ModelOutput

from .decoders import decoder_results, run_decoders, visual_prompts_by_row
from .transformers_compat import cache_argument, output_cache
from .video_masklets import add_masklets

IMAGE_OPTIONS = ("num_inference_steps", "guidance_scale", "image_guidance_scale", "seed")
UNSUPPORTED = {
    "num_beams": 1,  # one answer per row: a beam would have to carry its own decoder results
    "num_return_sequences": 1,
    "assistant_model": None,
    "streamer": None,
    "output_hidden_states": False,  # the decoders' inputs are in `super_link_states`
    "output_attentions": False,
}


@dataclass
class VisionLLMGenerateOutput(ModelOutput):
    """
    Output of `generate` for a model with decoders.

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, prompt_length + new_length)`):
            The prompt (left padded, as given) followed by each row's new tokens, `<query>` tokens included,
            right padded with the pad token.
        attention_mask (`torch.LongTensor`, same shape as `sequences`):
            1 for every real token; a teacher-forced forward over `sequences` with it reproduces generation.
        prompt_length (`int`):
            Where the new tokens start in `sequences`.
        results (`list[list[dict]]`):
            Per sample, one dict per routing token of its answer, in order: `routing` (e.g. `"[DET]"`),
            `position` (index of the routing token in `sequences`), and the decoder's outputs in coordinates
            normalised to the image: `boxes` `(n, 4)` xyxy, `scores` `(n,)`, `masks` `(n, h, w)` probabilities
            when the decoder makes masks; `images` (a list with one PIL image) for `[GEN]` / `[EDIT]`.
        super_link_states (`list[list[torch.FloatTensor]]`):
            Per sample, per routing token, the last-layer states handed to the decoder `(max(N, 1), hidden)`.
        scores (`tuple[torch.FloatTensor]`, *optional*):
            With `output_scores=True`: per sampling step, the processed scores `(batch_size, vocab_size)` the
            token was chosen from. Step k holds each row's k-th sampled token; the `<query>` tokens a routing token
            brings are inserted, not sampled, so they have no step.
        logits (`tuple[torch.FloatTensor]`, *optional*):
            With `output_logits=True`: the raw LM-head logits of the same steps.
    """

    sequences: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    prompt_length: int | None = None
    results: list[list[dict]] | None = None
    super_link_states: list[list[torch.FloatTensor]] | None = None
    scores: tuple[torch.FloatTensor, ...] | None = None
    logits: tuple[torch.FloatTensor, ...] | None = None


def _logits_processors(config: GenerationConfig) -> LogitsProcessorList:
    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k:
            processors.append(TopKLogitsWarper(config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(config.top_p))
    return processors


def _resolve_config(model, generation_config: GenerationConfig | None, kwargs: dict) -> GenerationConfig:
    config = copy.deepcopy(generation_config or model.generation_config)
    unused = config.update(**kwargs)
    if unused:
        raise TypeError(f"generate() got arguments it does not use: {sorted(unused)}")
    for name, default in UNSUPPORTED.items():
        if getattr(config, name, default) not in (default, None):
            raise ValueError(f"generate() with the super link does not support {name}={getattr(config, name)!r}")
    return config


@torch.no_grad()
def generate_with_super_link(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.LongTensor | None = None,
    decoder_pixel_values: torch.FloatTensor | None = None,
    decoder_image_index: torch.LongTensor | None = None,
    decoder_pixel_values_videos: torch.FloatTensor | None = None,
    video_mask: bool = True,
    generation_config: GenerationConfig | None = None,
    logits_processor: LogitsProcessorList | None = None,
    return_dict_in_generate: bool | None = None,
    **kwargs,
):
    """
    Greedy or sampled generation (per `generation_config`) that runs the decoders on every routing token.

    Model inputs other than ids and mask (`pixel_values`, `image_grids`, `region_masks`, ...) go in at prefill
    only. With a video tracker (`config.video_mask_decoder_config`), a `[SEG]` about a video also gets its
    masklet (`video_masks`, `video_scores`: see `video_masklets.py`); `video_mask=False` skips it. `num_inference_steps`, `guidance_scale`, `image_guidance_scale` (editing) and `seed` go to the
    `[GEN]` / `[EDIT]` diffusion pipelines (the LLM itself has no classifier-free guidance here).
    `cache_implementation="static"` preallocates the KV cache (room for a routing token's queries after every new
    token); with it the decode step is `torch.compile`d where transformers' own `generate` would compile it (CUDA,
    or `compile_config` with `_compile_all_devices`; `disable_compile=True` turns it off).
    Returns a [`VisionLLMGenerateOutput`], or only its `sequences` when `return_dict_in_generate=False`.
    """
    model_inputs = {key: kwargs.pop(key) for key in list(kwargs) if key in _PREFILL_INPUTS}
    image_options = {key: kwargs.pop(key) for key in list(kwargs) if key in IMAGE_OPTIONS}
    config = _resolve_config(model, generation_config, kwargs)
    processors = _logits_processors(config)
    if logits_processor is not None:
        processors.extend(logits_processor)
    super_link = model.model.super_link
    device = input_ids.device
    eos_ids = torch.tensor(_as_list(config.eos_token_id), device=device, dtype=torch.long)
    pad_id = config.pad_token_id if config.pad_token_id is not None else int(eos_ids[0]) if len(eos_ids) else 0
    prompt_length = input_ids.shape[1]
    max_new_tokens = _new_token_budget(config, prompt_length)
    min_new_tokens = config.min_new_tokens or 0

    batch = input_ids.shape[0]
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    sequence = input_ids
    cache = _static_cache(model, config, batch, prompt_length, max_new_tokens)
    outputs = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=_positions(mask, prompt_length),
        use_cache=True,
        logits_to_keep=1,
        return_dict=True,
        **model_inputs,
        **(cache_argument(cache) if cache is not None else {}),
    )
    cache, next_logits = output_cache(outputs), outputs.logits[:, -1]
    del outputs  # the prefill's vision-tower states are not needed past here
    step = _DecodeStep(model, cache, config, next_logits, device)
    real_tokens = mask.long().sum(1)  # per row: real tokens so far, the position the next one takes
    occurrences, sampled = [], torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    step_scores, step_logits = [], []

    for index in range(max_new_tokens):
        scores = processors(sequence, next_logits.float())
        scores[:, step.placeholders] = -float("inf")  # queries are inserted, images / regions filled: never sampled
        if index < min_new_tokens and len(eos_ids):  # later every row still sampling has sampled enough
            scores[(sampled < min_new_tokens).to(scores.device)[:, None] & step.eos_columns] = -float("inf")
        if config.output_scores:
            step_scores.append(scores.clone())
        if config.output_logits:
            step_logits.append(next_logits.clone())
        tokens = torch.multinomial(scores.softmax(-1), 1)[:, 0] if config.do_sample else scores.argmax(-1)
        tokens = tokens.to(device).masked_fill(finished, pad_id)
        lengths = torch.where(finished, 0, step.followers[tokens] + 1)  # this row's tokens in the next forward
        routes = step.routing[tokens] & ~finished
        sampled += (~finished).long()
        finished |= torch.isin(tokens, eos_ids)
        # the one host synchronisation of a step: the chunk's width, whether it routes, whether all rows are done
        width, routed, done = torch.stack([lengths.max(), routes.any().long(), finished.all().long()]).tolist()
        chunk, chunk_mask = _chunk(tokens, lengths, max(width, 1), super_link.query_token_id, pad_id)
        last_step = index == max_new_tokens - 1 or bool(done)
        offset = sequence.shape[1]
        sequence, mask = torch.cat([sequence, chunk], 1), torch.cat([mask, chunk_mask], 1)
        if last_step and not routed:
            break
        positions = (real_tokens[:, None] + chunk_mask.cumsum(-1) - 1).clamp_min(0)
        real_tokens = real_tokens + lengths
        hidden_states = step(chunk, mask, positions)
        if routed:
            real = chunk_mask.bool().tolist()
            for occurrence in super_link.collect(chunk, hidden_states):
                if real[occurrence.row][occurrence.position]:
                    occurrence.position += offset
                    occurrences.append(occurrence)
        if last_step:
            break
        next_logits = step.logits(hidden_states, (lengths - 1).clamp_min(0))

    sequences, final_mask, new_positions = _compact(sequence, mask, prompt_length, pad_id, occurrences)
    for occurrence, position in zip(occurrences, new_positions):
        occurrence.position = position
    occurrences.sort(key=lambda occurrence: (occurrence.row, occurrence.position))
    visual_prompts = visual_prompts_by_row(
        input_ids, model.config.region_token_id, model_inputs.get("region_masks"),
        model_inputs.get("region_image_index"), decoder_image_index,
    )
    visual_tokens = [model.config.image_token_id, model.config.video_token_id]
    rows_with_image = torch.isin(input_ids, torch.tensor([t for t in visual_tokens if t is not None], device=device))
    rows_with_image = rows_with_image.any(dim=1).tolist()
    results = _results(model, occurrences, decoder_pixel_values, visual_prompts, rows_with_image, image_options)
    tracker = model.video_mask_decoder
    if video_mask and tracker is not None and decoder_pixel_values_videos is not None:
        per_video = model.config.image_seq_length + decoder_pixel_values_videos.shape[1]
        videos_per_row = ((input_ids == model.config.video_token_id).sum(1) // per_video).tolist()
        add_masklets(tracker, results, videos_per_row, decoder_pixel_values_videos, decoder_image_index)
    if return_dict_in_generate is False:
        return sequences
    states = [[o.states for o in occurrences if o.row == row] for row in range(batch)]
    return VisionLLMGenerateOutput(
        sequences=sequences,
        attention_mask=final_mask,
        prompt_length=prompt_length,
        results=results,
        super_link_states=states,
        scores=tuple(step_scores) if config.output_scores else None,
        logits=tuple(step_logits) if config.output_logits else None,
    )


_PREFILL_INPUTS = ("pixel_values", "image_grids", "region_masks", "region_image_index", "pixel_values_videos")


DEFAULT_NEW_TOKENS = 20  # transformers' budget when neither max_new_tokens nor a max_length of one's own is set


def _new_token_budget(config: GenerationConfig, prompt_length: int) -> int:
    """`max_new_tokens`, else what `max_length` leaves after the prompt, else transformers' default of 20 new tokens."""
    if config.max_new_tokens is not None:  # transformers' GenerationConfig has checked it
        return config.max_new_tokens
    if config.max_length is None or config.max_length == DEFAULT_NEW_TOKENS:  # transformers' own default
        return DEFAULT_NEW_TOKENS
    return max(config.max_length - prompt_length, 0)


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _positions(mask: torch.Tensor, length: int) -> torch.LongTensor:
    """Position ids of the last `length` columns: real tokens count up, padding does not advance."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)[:, -length:]


def _static_cache(model, config: GenerationConfig, batch: int, prompt_length: int, max_new_tokens: int):
    """
    A `StaticCache` when `config.cache_implementation == "static"`, else None (the model makes a dynamic one).
    It holds the prompt, every new token and, after each, the most `<query>` tokens a routing token brings.
    """
    if config.cache_implementation is None or config.cache_implementation == "dynamic":
        return None
    if config.cache_implementation != "static":
        raise ValueError(
            f"generate() with the super link supports cache_implementation 'dynamic' or 'static', got "
            f"{config.cache_implementation!r}"
        )
    most_queries = max(model.model.super_link.num_queries.values(), default=0)
    length = prompt_length + max_new_tokens * (1 + most_queries)
    # Reused across calls while it fits, as transformers' `generate` reuses its own: a compiled decode step keeps
    # its graph only while the cache tensors stay the same.
    weight = model.lm_head.weight
    kept = getattr(model, "_super_link_static_cache", None)
    if kept is not None and kept[0] == (batch, weight.device, weight.dtype) and kept[1] >= length:
        kept[2].reset()
        return kept[2]
    cache = StaticCache(config=model.model.language_model.config, max_cache_len=length)
    model._super_link_static_cache = ((batch, weight.device, weight.dtype), length, cache)
    return cache


class _DecodeStep:
    """
    One decoding forward after the prefill: token embeddings (with super-link queries written in), the LLM with its
    KV cache, and the LM head on one chosen position per row. This is the LLM part of the model's `forward`
    without what only a prefill needs (images, regions, the checks on them), and without looking for routing
    tokens (the loop knows whether it fed any). With a static cache the LLM call is the compiled one when
    transformers' rules for `generate` allow it.
    """

    def __init__(self, model, cache, config: GenerationConfig, logits: torch.Tensor, device: torch.device):
        self.model, self.cache = model, cache
        self.language_model = model.model.language_model
        self.static = bool(getattr(cache, "is_compileable", False))
        self.call = self.language_model
        if self.static and _can_compile(model, config):
            self.call = _compiled_call(self.language_model, config.compile_config or CompileConfig())
        # Lookups made once, on the device where they are read: the tokens' (the inputs') and the logits'
        super_link = model.model.super_link
        size = max(logits.shape[-1], *(token + 1 for token in super_link.names_by_id))
        self.followers = torch.zeros(size, dtype=torch.long, device=device)  # token id -> its <query> tokens
        self.routing = torch.zeros(size, dtype=torch.bool, device=device)  # token id -> is a routing token
        for token, name in super_link.names_by_id.items():
            self.followers[token] = super_link.num_queries[name]
            self.routing[token] = True
        self.placeholders = torch.tensor(model.config.placeholder_token_ids(), dtype=torch.long, device=logits.device)
        self.eos_columns = torch.zeros(1, logits.shape[-1], dtype=torch.bool, device=logits.device)  # (1, vocab)
        self.eos_columns[0, _as_list(config.eos_token_id)] = True

    def __call__(self, chunk: torch.LongTensor, mask: torch.Tensor, positions: torch.LongTensor) -> torch.Tensor:
        """The last-layer hidden states of `chunk` `(batch, width, hidden)`, appended to the KV cache."""
        inputs_embeds = self.model.model.get_input_embeddings()(chunk)
        if chunk.shape[1] > 1:  # only a routing token widens the chunk: its queries follow it
            inputs_embeds = self.model.model.super_link.embed_queries(chunk, inputs_embeds)
        attention_mask = mask
        if self.static:  # the 4D mask made outside the compiled call, as transformers' generate does
            attention_mask = create_masks_for_generate(
                self.language_model.config, inputs_embeds, mask, self.cache, positions  # positional: renamed in 5.24
            )
        outputs = self.call(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=True,
            return_dict=True,
            **cache_argument(self.cache),
        )
        return outputs.last_hidden_state

    def logits(self, hidden_states: torch.Tensor, columns: torch.LongTensor) -> torch.Tensor:
        """
        LM-head logits `(batch, vocab)` at one column per row. A chunk with queries goes through the head whole,
        then the column is picked, so the logits equal the model's `forward` bit for bit (a matrix product over
        fewer rows may round differently); the extra rows cost little next to reading the head's weights.
        """
        lm_head = self.model.lm_head
        hidden_states = hidden_states.to(lm_head.weight.dtype)
        if hidden_states.shape[1] == 1:
            return lm_head(hidden_states[:, 0])
        rows = torch.arange(len(columns), device=columns.device)
        return lm_head(hidden_states)[rows, columns.to(hidden_states.device)]


def _can_compile(model, config: GenerationConfig) -> bool:
    """transformers' `generate` rule: compile a static-cache decode step on CUDA/XPU, or anywhere when asked."""
    if config.disable_compile:
        return False
    compile_config = config.compile_config
    asked = bool(compile_config is not None and getattr(compile_config, "_compile_all_devices", False))
    if not (model.device.type in ("cuda", "xpu") or asked):
        return False
    devices = set(getattr(model, "hf_device_map", {}).values())
    return not ("cpu" in devices and len(devices) > 1) and getattr(model, "hf_quantizer", None) is None


def _compiled_call(module, compile_config: CompileConfig):
    """`torch.compile` of `module.__call__` with `compile_config`, made once per config (transformers'
    `get_compiled_call` reads a `generation_config` that a bare LLM does not have)."""
    kept = getattr(module, "_super_link_compiled_call", None)
    if kept is None or kept[0] != compile_config:
        kept = (compile_config, torch.compile(module.__call__, **compile_config.to_dict()))
        module._super_link_compiled_call = kept
    return kept[1]


def _chunk(tokens: torch.LongTensor, lengths: torch.LongTensor, width: int, query_id: int, pad_id: int):
    """
    Per row its sampled token plus the `<query>` tokens a routing token brings (`lengths` tokens, 0 for a finished
    row), padded to `width`; and the mask of the real ones.
    """
    if width == 1:
        return tokens[:, None], lengths[:, None].clone()
    columns = torch.arange(width, device=tokens.device)
    chunk_mask = (columns < lengths[:, None]).long()
    chunk = torch.where(columns == 0, tokens[:, None], query_id).masked_fill(chunk_mask == 0, pad_id)
    return chunk, chunk_mask


def _compact(sequence, mask, prompt_length: int, pad_id: int, occurrences=()):
    """
    Drop the masked filler from the new part, keeping the prompt as given: returns sequences, their attention
    mask, and the new column of each occurrence's routing token.
    """
    new_ids, new_mask = sequence[:, prompt_length:], mask[:, prompt_length:].bool()
    lengths = new_mask.sum(1)
    width = int(lengths.max()) if len(lengths) else 0
    kept = torch.sort((~new_mask).to(torch.uint8), dim=1, stable=True).indices[:, :width]  # real columns first
    compact_mask = (torch.arange(width, device=sequence.device) < lengths[:, None]).to(sequence.dtype)
    compact = new_ids.gather(1, kept).masked_fill(compact_mask == 0, pad_id)
    new_positions = []
    if occurrences:
        rows = torch.tensor([o.row for o in occurrences], device=sequence.device)
        columns = torch.tensor([o.position - prompt_length for o in occurrences], device=sequence.device)
        new_positions = (prompt_length + new_mask.long().cumsum(1)[rows, columns] - 1).tolist()
    return (
        torch.cat([sequence[:, :prompt_length], compact], 1),
        torch.cat([mask[:, :prompt_length], compact_mask], 1),
        new_positions,
    )


def _results(
    model, occurrences, decoder_pixel_values, visual_prompts, rows_with_image, image_options: dict
) -> list[list[dict]]:
    """
    Per row, one result per routing token. A decoder that reads the image is not run for a sample without one
    (a text-only question answered with `[DET]`, say): its result holds no objects and a warning says so.
    """
    per_row = [[] for _ in range(len(rows_with_image))]
    if not occurrences:
        return per_row
    def can_run(occurrence) -> bool:
        return rows_with_image[occurrence.row] or not model.decoders[occurrence.name].needs_image

    runnable = [occurrence for occurrence in occurrences if can_run(occurrence)]
    for occurrence in occurrences:
        if not can_run(occurrence):
            warnings.warn(
                f"sample {occurrence.row}'s answer holds '{occurrence.name}' routing, but the sample has no image: "
                "its decoder reads the image, so it was not run and gives no objects",
                stacklevel=4,
            )
    outputs = run_decoders(model.model.super_link, model.decoders, runnable, decoder_pixel_values, visual_prompts)
    decoded = dict(zip(map(id, runnable), decoder_results(model.decoders, outputs, len(runnable), image_options)))
    routing_tokens = {name: token for token, name in model.model.super_link.names_by_id.items()}
    for occurrence in occurrences:
        result = decoded.get(id(occurrence), {"scores": torch.zeros(0), "skipped": "the sample has no image"})
        entry = {
            "routing": occurrence.name,
            "routing_token_id": routing_tokens[occurrence.name],
            "position": occurrence.position,
        }
        detached = {key: value.detach() if torch.is_tensor(value) else value for key, value in result.items()}
        per_row[occurrence.row].append({**entry, **detached})
    return per_row


__all__ = ["VisionLLMGenerateOutput", "generate_with_super_link"]
