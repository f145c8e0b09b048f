"""The fast paths of generation with the super link give the answers the straightforward ones give.

`generate_with_super_link` builds each step's chunk and compacts the sequences with tensor code, synchronises with
the host once per step, and runs its own decode step (embeddings, queries, LLM, LM head) instead of the model's
whole `forward`. These tests hold it to the slow, obvious versions: per-row Python references of the chunk and the
compaction, batch 8 against each sample alone, transformers' `generate` on LLaVA with the same weights, and the
static cache against the dynamic one.
"""

import numpy as np
import pytest
import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from visionllm_hf import VisionLLMForConditionalGeneration
from visionllm_hf.builder.presets import make_config, tiny_detector_config, tiny_sam_config, tiny_text_config
from visionllm_hf.builder.presets import tiny_vision_config
from visionllm_hf.modeling.super_link_generation import _chunk, _compact

from .helpers import ScriptedTokens, random_image

PAD = 0


def chunk_reference(tokens, finished, followers: dict[int, int], query_id: int, pad_id: int):
    """The per-row chunk, as the loop built it before it was vectorised."""
    rows = [[] if done else [token] + [query_id] * followers.get(token, 0)
            for token, done in zip(tokens.tolist(), finished.tolist())]
    width = max(1, max(len(row) for row in rows))
    chunk = torch.full((len(rows), width), pad_id, dtype=torch.long)
    chunk_mask = torch.zeros_like(chunk)
    for index, row in enumerate(rows):
        chunk[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        chunk_mask[index, : len(row)] = 1
    return chunk, chunk_mask


def compact_reference(sequence, mask, prompt_length: int, pad_id: int):
    """The per-row compaction, as the loop did it before it was vectorised."""
    new_ids, new_mask = sequence[:, prompt_length:], mask[:, prompt_length:]
    lengths = new_mask.sum(1)
    width = int(lengths.max()) if len(lengths) else 0
    compact = torch.full((len(sequence), width), pad_id, dtype=sequence.dtype)
    compact_mask = torch.zeros_like(compact)
    positions = []
    for row in range(len(sequence)):
        kept = new_mask[row].nonzero()[:, 0]
        compact[row, : len(kept)] = new_ids[row, kept]
        compact_mask[row, : len(kept)] = 1
        positions.append({int(old) + prompt_length: prompt_length + new for new, old in enumerate(kept.tolist())})
    return (torch.cat([sequence[:, :prompt_length], compact], 1), torch.cat([mask[:, :prompt_length], compact_mask], 1),
            positions)


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_chunk_equals_the_per_row_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    followers = {90: 4, 91: 4, 92: 0, 93: 64}  # routing ids -> their <query> tokens (0: the token's own state)
    tokens = torch.randint(85, 95, (8,), generator=generator)
    finished = torch.rand(8, generator=generator) < 0.3
    tokens = tokens.masked_fill(finished, PAD)
    table = torch.zeros(100, dtype=torch.long)
    for token, count in followers.items():
        table[token] = count
    lengths = torch.where(finished, 0, table[tokens] + 1)
    chunk, chunk_mask = _chunk(tokens, lengths, max(int(lengths.max()), 1), 99, PAD)
    expected, expected_mask = chunk_reference(tokens, finished, followers, 99, PAD)
    assert torch.equal(chunk, expected) and torch.equal(chunk_mask, expected_mask)


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_compact_equals_the_per_row_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    prompt_length, new_length = 6, 15
    sequence = torch.randint(1, 50, (8, prompt_length + new_length), generator=generator)
    mask = (torch.rand(8, prompt_length + new_length, generator=generator) < 0.7).long()
    mask[:, prompt_length - 1] = 1
    sequence = sequence.masked_fill(mask == 0, PAD)

    class Occurrence:
        def __init__(self, row, position):
            self.row, self.position = row, position

    real = [(row, column) for row, column in mask[:, prompt_length:].nonzero().tolist()]
    occurrences = [Occurrence(row, column + prompt_length) for row, column in real[::3]]
    compacted, compacted_mask, new_positions = _compact(sequence, mask, prompt_length, PAD, occurrences)
    expected, expected_mask, positions = compact_reference(sequence, mask, prompt_length, PAD)
    assert torch.equal(compacted, expected) and torch.equal(compacted_mask, expected_mask)
    assert compacted.dtype == expected.dtype and compacted_mask.dtype == expected_mask.dtype
    assert new_positions == [positions[o.row][o.position] for o in occurrences]


def answers_and_prompts(processor):
    """8 samples: routed answers (every routing token, one ending the answer), plain ones, free ones."""
    answers = ["the cat [DET], a dog [DET]", "it [SEG] and there <LOC>", "", "plain words only", "[POSE] person",
               "", "x <LOC> y [SEG]", "cat [DET]"]
    prompts = ["<image> Describe.", "<image> Find every animal in the picture please.", "<image> Where?",
               "<image> What is it?", "<image> Pose?", "<image> Count the shapes in this picture.", "<image> Go.",
               "<image> Find cats."]
    images = [random_image(40 + 7 * index, 90 - 5 * index, seed=index) for index in range(8)]
    scripts = [processor.tokenizer.encode(answer, add_special_tokens=False) for answer in answers]
    return scripts, prompts, images


def generate(model, processor, scripts, prompts, images, **options):
    inputs = processor(images=images, text=prompts)
    forced = ScriptedTokens(scripts, processor.tokenizer.eos_token_id)
    with torch.no_grad():
        return model.generate(**inputs, logits_processor=[forced], max_new_tokens=12, **options)


def new_tokens(output, row: int) -> list[int]:
    return output.sequences[row, output.prompt_length :][output.attention_mask[row, output.prompt_length :].bool()].tolist()


def test_batch_of_8_equals_each_sample_alone(tiny):
    model, processor = tiny
    scripts, prompts, images = answers_and_prompts(processor)
    batched = generate(model, processor, scripts, prompts, images)
    assert sum(len(results) for results in batched.results) >= 8  # routing in play
    for row in range(8):
        alone = generate(model, processor, scripts[row : row + 1], prompts[row : row + 1], images[row : row + 1])
        assert new_tokens(batched, row) == new_tokens(alone, 0)
        offset = batched.prompt_length - alone.prompt_length
        assert [r["position"] - offset for r in batched.results[row]] == [r["position"] for r in alone.results[0]]
        for ours, theirs in zip(batched.results[row], alone.results[0]):
            assert ours["routing"] == theirs["routing"]
            for key in ("boxes", "scores", "masks", "keypoints"):
                if key in ours:
                    torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=1e-4)
        for ours, theirs in zip(batched.super_link_states[row], alone.super_link_states[0]):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_static_cache_gives_the_dynamic_cache_answers_and_is_reused(tiny):
    model, processor = tiny
    scripts, prompts, images = answers_and_prompts(processor)
    dynamic = generate(model, processor, scripts, prompts, images)
    static = generate(model, processor, scripts, prompts, images, cache_implementation="static")
    assert torch.equal(static.sequences, dynamic.sequences)
    assert torch.equal(static.attention_mask, dynamic.attention_mask)
    for ours, theirs in zip(static.results, dynamic.results):
        assert [r["position"] for r in ours] == [r["position"] for r in theirs]
    for ours, theirs in zip(static.super_link_states, dynamic.super_link_states):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    cache = model._super_link_static_cache[2]
    again = generate(model, processor, scripts, prompts, images, cache_implementation="static")
    assert model._super_link_static_cache[2] is cache and torch.equal(again.sequences, static.sequences)
    with pytest.raises(ValueError, match="cache_implementation"):
        generate(model, processor, scripts, prompts, images, cache_implementation="offloaded")


class PlainText:
    """Bans ids from `first` on (our special tokens) on any model: plain-text answers."""

    def __init__(self, first: int):
        self.first = first

    def __call__(self, input_ids, scores):
        scores[:, self.first :] = -float("inf")
        return scores


def test_plain_text_answers_equal_transformers_generate_on_llava():
    """Our loop (a model with decoders) and transformers' `generate` (LLaVA), same weights: the same tokens."""
    vocab, image, first_special = 300, 299, 290
    tokens = {"det_token_id": 290, "seg_token_id": 291, "pose_token_id": 292, "loc_token_id": 293,
              "query_token_id": 294}
    vision, text = tiny_vision_config(), tiny_text_config(vocab, pad_token_id=PAD)
    ours_config = make_config(
        vision, text, image_token_id=image, vision_feature_layer=-2, min_tiles=1, max_tiles=1, use_global_view=False,
        region_encoder_type=None, routing_decoders={"det": "object", "seg": "mask", "pose": "keypoint", "loc": "box"},
        mask_decoder_config=tiny_sam_config(), object_decoder_config=tiny_detector_config(), **tokens,
    )
    llava_config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image,
                               image_seq_length=ours_config.image_seq_length, vision_feature_layer=-2)
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(llava_config).eval()
    ours = VisionLLMForConditionalGeneration(ours_config).eval()
    missing, unexpected = ours.load_state_dict(llava.state_dict(), strict=False)
    assert not unexpected and all(key.startswith(("decoders.", "model.super_link.")) for key in missing)
    batch, length = 8, 10
    rng = np.random.default_rng(0)
    text_ids = torch.from_numpy(rng.integers(3, first_special, (batch, length)))
    image_ids = torch.full((batch, ours_config.image_seq_length), image)
    input_ids = torch.cat([text_ids[:, :4], image_ids, text_ids[:, 4:]], 1)
    attention_mask = torch.ones_like(input_ids)
    for row in range(batch):  # left padding of different widths
        input_ids[row, : row % 4] = PAD
        attention_mask[row, : row % 4] = 0
    pixel_values = torch.randn(batch, 3, vision.image_size, vision.image_size)
    options = dict(max_new_tokens=16, do_sample=False, pad_token_id=PAD, eos_token_id=2)
    with torch.no_grad():
        expected = llava.generate(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                                  logits_processor=[PlainText(first_special)], **options)
        generated = ours.generate(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                                  logits_processor=[PlainText(first_special)], **options)
        alone = [ours.generate(input_ids=input_ids[row : row + 1, row % 4 :], pixel_values=pixel_values[row : row + 1],
                               logits_processor=[PlainText(first_special)], **options) for row in range(batch)]
    new = generated.sequences[:, input_ids.shape[1] :]
    assert torch.equal(generated.sequences, expected)
    for row in range(batch):
        assert torch.equal(alone[row].sequences[0, input_ids.shape[1] - row % 4 :], new[row])
