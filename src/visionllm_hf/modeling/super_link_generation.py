"""Generation with the super link: decoders run inside `generate`, with the KV cache, on batches.

Each step samples one token per row. A row that samples a routing token feeds it *together with its N
`<query>` tokens* in the next forward, so the queries enter the KV cache exactly where training puts them and
every later token attends to them; the states the decoders need come out of that same forward, which had to
run anyway to produce the next token. Rows of a batch that feed fewer tokens in a step are filled with masked
padding (attention mask 0, positions not advanced), so each row computes what it would compute alone.

Only when a routing token is the very last sampled token (`max_new_tokens` reached, or every other row has
finished) does one extra forward run, to collect its states; its decoder still runs.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and transformers.
"""

import copy
import warnings
from dataclasses import dataclass

import torch
from transformers import GenerationConfig
from transformers.generation import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.modeling_outputs import ModelOutput

from .decoders import decoder_results, run_decoders, visual_prompts_by_row
from .transformers_compat import output_cache

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
    generation_config: GenerationConfig | None = None,
    logits_processor: LogitsProcessorList | None = None,
    return_dict_in_generate: bool | None = None,
    **kwargs,
):
    """
    Greedy or sampled generation (per `generation_config`) that runs the decoders on every routing token.

    Model inputs other than ids and mask (`pixel_values`, `image_grids`, `region_masks`, ...) go in at prefill
    only. `num_inference_steps`, `guidance_scale`, `image_guidance_scale` (editing) and `seed` go to the
    `[GEN]` / `[EDIT]` diffusion pipelines (the LLM itself has no classifier-free guidance here).
    Returns a [`VisionLLMGenerateOutput`], or only its `sequences` when `return_dict_in_generate=False`.
    """
    model_inputs = {key: kwargs.pop(key) for key in list(kwargs) if key in _PREFILL_INPUTS}
    image_options = {key: kwargs.pop(key) for key in list(kwargs) if key in IMAGE_OPTIONS}
    config = _resolve_config(model, generation_config, kwargs)
    processors = _logits_processors(config)
    if logits_processor is not None:
        processors.extend(logits_processor)
    super_link = model.model.super_link
    query_id = super_link.query_token_id
    placeholders = model.config.placeholder_token_ids()
    eos_ids = torch.tensor(_as_list(config.eos_token_id), device=input_ids.device, dtype=torch.long)
    pad_id = config.pad_token_id if config.pad_token_id is not None else int(eos_ids[0]) if len(eos_ids) else 0
    prompt_length = input_ids.shape[1]
    max_new_tokens = _new_token_budget(config, prompt_length)
    min_new_tokens = config.min_new_tokens or 0

    batch = input_ids.shape[0]
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    sequence = input_ids
    outputs = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=_positions(mask, prompt_length),
        use_cache=True,
        logits_to_keep=1,
        return_dict=True,
        **model_inputs,
    )
    cache, next_logits = output_cache(outputs), outputs.logits[:, -1]
    occurrences, sampled = [], torch.zeros(batch, dtype=torch.long, device=input_ids.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    step_scores, step_logits = [], []

    for step in range(max_new_tokens):
        scores = processors(sequence, next_logits.float())
        scores[:, placeholders] = -float("inf")  # queries are inserted and images / regions filled, never sampled
        if len(eos_ids):
            scores[(sampled < min_new_tokens)[:, None] & _one_hot(eos_ids, scores)] = -float("inf")
        if config.output_scores:
            step_scores.append(scores.clone())
        if config.output_logits:
            step_logits.append(next_logits.clone())
        tokens = torch.multinomial(scores.softmax(-1), 1)[:, 0] if config.do_sample else scores.argmax(-1)
        tokens = tokens.masked_fill(finished, pad_id)
        chunk, chunk_mask = _chunk(tokens, finished, super_link, query_id, pad_id)
        sampled += (~finished).long()
        finished |= torch.isin(tokens, eos_ids)
        last_step = step == max_new_tokens - 1 or bool(finished.all())
        if last_step and not super_link.is_routing(chunk).any():
            sequence, mask = torch.cat([sequence, chunk], 1), torch.cat([mask, chunk_mask], 1)
            break
        offset = sequence.shape[1]
        sequence, mask = torch.cat([sequence, chunk], 1), torch.cat([mask, chunk_mask], 1)
        outputs = model(
            input_ids=chunk,
            attention_mask=mask,
            position_ids=_positions(mask, chunk.shape[1]),
            cache=cache,
            use_cache=True,
            return_dict=True,
        )
        for occurrence in outputs.super_link_occurrences:
            if chunk_mask[occurrence.row, occurrence.position]:
                occurrence.position += offset
                occurrences.append(occurrence)
        if last_step:
            break
        cache = output_cache(outputs)
        last_real = chunk_mask.sum(1).clamp_min(1) - 1
        next_logits = outputs.logits[torch.arange(batch), last_real]

    sequences, final_mask, positions = _compact(sequence, mask, prompt_length, pad_id)
    occurrences.sort(key=lambda occurrence: (occurrence.row, occurrence.position))
    visual_prompts = visual_prompts_by_row(input_ids, model.config.region_token_id, model_inputs.get("region_masks"))
    rows_with_image = (input_ids == model.config.image_token_id).any(dim=1).tolist()
    results = _results(model, occurrences, decoder_pixel_values, visual_prompts, positions, rows_with_image, image_options)
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


_PREFILL_INPUTS = ("pixel_values", "image_grids", "region_masks", "region_image_index")


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


def _one_hot(ids: torch.Tensor, scores: torch.Tensor) -> torch.BoolTensor:
    hot = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
    hot[ids] = True
    return hot[None].expand_as(scores)


def _positions(mask: torch.Tensor, length: int) -> torch.LongTensor:
    """Position ids of the last `length` columns: real tokens count up, padding does not advance."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)[:, -length:]


def _chunk(tokens, finished, super_link, query_id: int, pad_id: int):
    """Per row its sampled token plus the `<query>` tokens a routing token brings, padded to one width."""
    rows = []
    for token, done in zip(tokens.tolist(), finished.tolist()):
        rows.append([] if done else [token] + [query_id] * super_link.followers(token))
    width = max(1, max(len(row) for row in rows))
    chunk = torch.full((len(rows), width), pad_id, dtype=torch.long, device=tokens.device)
    chunk_mask = torch.zeros_like(chunk)
    for index, row in enumerate(rows):
        chunk[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        chunk_mask[index, : len(row)] = 1
    return chunk, chunk_mask


def _compact(sequence, mask, prompt_length: int, pad_id: int):
    """
    Drop the masked filler from the new part, keeping the prompt as given: returns sequences, their attention
    mask, and for each row a map from old column to new column (for routing positions).
    """
    new_ids, new_mask = sequence[:, prompt_length:], mask[:, prompt_length:]
    lengths = new_mask.sum(1)
    width = int(lengths.max()) if len(lengths) else 0
    compact = torch.full((len(sequence), width), pad_id, dtype=sequence.dtype, device=sequence.device)
    compact_mask = torch.zeros_like(compact)
    positions = []
    for row in range(len(sequence)):
        kept = new_mask[row].nonzero()[:, 0]
        compact[row, : len(kept)] = new_ids[row, kept]
        compact_mask[row, : len(kept)] = 1
        positions.append({int(old) + prompt_length: prompt_length + new for new, old in enumerate(kept.tolist())})
    return (
        torch.cat([sequence[:, :prompt_length], compact], 1),
        torch.cat([mask[:, :prompt_length], compact_mask], 1),
        positions,
    )


def _results(
    model, occurrences, decoder_pixel_values, visual_prompts, positions, rows_with_image, image_options: dict
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
        position = positions[occurrence.row][occurrence.position]
        occurrence.position = position
        entry = {"routing": occurrence.name, "routing_token_id": routing_tokens[occurrence.name], "position": position}
        detached = {key: value.detach() if torch.is_tensor(value) else value for key, value in result.items()}
        per_row[occurrence.row].append({**entry, **detached})
    return per_row


__all__ = ["VisionLLMGenerateOutput", "generate_with_super_link"]
