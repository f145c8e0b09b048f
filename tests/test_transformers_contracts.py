"""The contracts transformers' own common model and processor tests check, and generic code relies on.

Beam search and `num_return_sequences`, `return_dict=False`, `inputs_embeds`, the Trainer's loss keyword
arguments, `get_image_features`, hidden states, the tensor-parallel plan and processor keyword arguments, for
VisionLLM v2 (with and without decoders) and v1.
"""

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from visionllm_hf.builder.v1 import build_tiny_v1

from .helpers import ScriptedTokens, random_image

GOOD_IMAGE = random_image(40, 40, seed=9)


def beam_batch(processor):
    """Two samples: a wide image (2 local tiles + global view) and a square one (1 + 1), each with a region."""
    images = [random_image(32, 64, seed=1), random_image(40, 40, seed=2)]
    texts = ["<image> What is <region> here?", "<image> Tell me about <region>, please."]
    regions = [[{"box": [2, 2, 30, 20]}], [{"point": [30, 10]}]]
    return processor(images=images, text=texts, regions=regions), (images, texts, regions)


@pytest.fixture(scope="module")
def tiny_v1():
    model, processor = build_tiny_v1(seed=0)
    return model.eval(), processor


def v1_inputs(processor):
    images = [random_image(64, 64, seed=1), random_image(50, 80, seed=2)]
    texts = ["<image> Please detect <class>.", "<image> Describe it"]
    return processor(images=images, text=texts, categories=[["a", "b"], ["a"]])


# --- 1. beam search and num_return_sequences ---------------------------------------------------


def test_expanded_inputs_give_each_row_its_own_tiles_and_regions(tiny_plain):
    model, processor = tiny_plain
    inputs, _ = beam_batch(processor)
    assert inputs["image_grids"].prod(-1).tolist() == [2, 1]  # 3 and 2 tiles with the global views
    input_ids, expanded = model._expand_inputs_for_generation(expand_size=2, **inputs)
    with torch.no_grad():
        original = model(**inputs).logits[:, -1]
        repeated = model(input_ids=input_ids, **expanded).logits[:, -1]
    assert (repeated - original.repeat_interleave(2, dim=0)).abs().max() <= 1e-5


def test_beam_search_with_several_return_sequences_equals_per_sample(tiny_plain):
    model, processor = tiny_plain
    inputs, (images, texts, regions) = beam_batch(processor)
    options = {"num_beams": 2, "num_return_sequences": 2, "max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False}
    with torch.no_grad():
        batched = model.generate(**inputs, **options)
        for row in range(2):
            alone = processor(images=[images[row]], text=[texts[row]], regions=[regions[row]])
            single = model.generate(**alone, **options)
            new = single[:, alone["input_ids"].shape[1]:]
            assert torch.equal(batched[2 * row : 2 * row + 2, inputs["input_ids"].shape[1]:], new)


def test_super_link_generation_refuses_beams_and_hidden_states(tiny):
    model, processor = tiny
    inputs, _ = beam_batch(processor)
    for option in ({"num_beams": 2}, {"num_return_sequences": 2}, {"output_hidden_states": True},
                   {"output_attentions": True}):
        with pytest.raises(ValueError, match=next(iter(option))):
            model.generate(**inputs, max_new_tokens=2, **option)


def test_super_link_generation_returns_scores_and_logits_per_sampled_token(tiny):
    model, processor = tiny
    inputs, _ = beam_batch(processor)
    script = [processor.tokenizer.encode(answer, add_special_tokens=False) for answer in ("a [DET] b", "c d")]
    forced = ScriptedTokens(script, processor.tokenizer.eos_token_id)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, logits_processor=[forced], output_scores=True,
                             output_logits=True, return_dict_in_generate=True)
    vocab = model.config.text_config.vocab_size
    assert len(out.scores) == len(out.logits) >= len(script[0])
    assert all(step.shape == (2, vocab) for step in out.scores + out.logits)
    for row, tokens in enumerate(script):  # the forced token scores 0, everything else -inf
        assert [int(out.scores[k][row].argmax()) for k in range(len(tokens))] == tokens
    assert not torch.equal(out.scores[0], out.logits[0])  # processed scores, raw logits


# --- 2. hidden states and attentions ----------------------------------------------------------


def test_v1_returns_hidden_states_and_attentions(tiny_v1):
    model, processor = tiny_v1
    inputs = v1_inputs(processor)
    layers = model.config.text_config.num_hidden_layers
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        generated = model.generate(**inputs, max_new_tokens=2, output_hidden_states=True, return_dict_in_generate=True)
    assert len(out.hidden_states) == layers + 1
    assert torch.equal(model.lm_head(out.hidden_states[-1]), out.logits)
    assert generated.hidden_states is not None and len(generated.hidden_states[0]) == layers + 1
    eager, _ = build_tiny_v1(seed=0)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = eager.eval()(**inputs, output_attentions=True).attentions
    assert len(attentions) == layers and attentions[0].shape[-1] == inputs["input_ids"].shape[1]


def test_v2_returns_hidden_states(either_tiny):
    model, processor = either_tiny
    inputs, _ = beam_batch(processor)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.text_config.num_hidden_layers + 1
    torch.testing.assert_close(model.lm_head(out.hidden_states[-1]), out.logits)


# --- 3. the Trainer's loss keyword arguments --------------------------------------------------


def shifted(labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)


def test_v2_loss_uses_shift_labels_and_num_items_in_batch(either_tiny):
    model, processor = either_tiny
    inputs, _ = beam_batch(processor)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    garbage = torch.full_like(labels, -100)
    with torch.no_grad():
        expected = model(**inputs, labels=labels).loss
        from_shifted = model(**inputs, labels=garbage, shift_labels=shifted(labels)).loss
        summed = model(**inputs, labels=labels, num_items_in_batch=torch.tensor(1)).loss
    torch.testing.assert_close(from_shifted, expected)
    count = int((shifted(labels) != -100).sum())  # the prompts hold no routing token, so no <query> position
    torch.testing.assert_close(summed, expected * count, rtol=1e-4, atol=1e-4)


def test_v2_shift_labels_never_target_query_positions(tiny):
    model, processor = tiny
    inputs = processor(images=[random_image(40, 40)], text=["<image> find it [DET] now"])
    labels = inputs["input_ids"].clone()
    with torch.no_grad():
        expected = model(**inputs, labels=labels).loss
        from_shifted = model(**inputs, shift_labels=shifted(labels)).loss
    torch.testing.assert_close(from_shifted, expected)


def test_v1_loss_uses_shift_labels(tiny_v1):
    model, processor = tiny_v1
    inputs = v1_inputs(processor)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        expected = model(**inputs, labels=labels).loss
        from_shifted = model(**inputs, labels=torch.full_like(labels, -100), shift_labels=shifted(labels)).loss
    torch.testing.assert_close(from_shifted, expected)


# --- 4. return_dict=False ---------------------------------------------------------------------


def test_return_dict_false_gives_tuples(either_tiny, tiny_v1):
    for model, inputs in ((either_tiny[0], beam_batch(either_tiny[1])[0]), (tiny_v1[0], v1_inputs(tiny_v1[1]))):
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        with torch.no_grad():
            as_dict = model(**inputs, labels=labels)
            as_tuple = model(**inputs, labels=labels, return_dict=False)
        assert isinstance(as_tuple, tuple)
        torch.testing.assert_close(as_tuple[0], as_dict.loss)
        torch.testing.assert_close(as_tuple[1], as_dict.logits)


# --- 5. inputs_embeds -------------------------------------------------------------------------


def test_v2_inputs_embeds_with_images_and_regions_equals_input_ids(either_tiny):
    model, processor = either_tiny
    inputs = processor(images=[random_image(32, 64, seed=1), random_image(40, 40, seed=2)],
                       text=["<image> What is <region>? a [DET]", "<image> Tell me."],
                       regions=[[{"box": [2, 2, 30, 20]}], []])
    inputs_embeds = model.get_input_embeddings()(inputs["input_ids"])
    by_embeds = {key: value for key, value in inputs.items() if key != "input_ids"}
    with torch.no_grad():
        expected = model(**inputs)
        out = model(inputs_embeds=inputs_embeds, **by_embeds)
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=0)
    if model.decoders is not None:  # routing tokens and their queries are found too
        assert [o.position for o in out.super_link_occurrences] == [o.position for o in expected.super_link_occurrences]


def test_v2_generate_from_inputs_embeds_equals_from_input_ids(tiny_plain):
    model, processor = tiny_plain
    inputs, _ = beam_batch(processor)
    by_embeds = {key: value for key, value in inputs.items() if key != "input_ids"}
    greedy = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        expected = model.generate(**inputs, **greedy)[:, inputs["input_ids"].shape[1]:]
        generated = model.generate(inputs_embeds=model.get_input_embeddings()(inputs["input_ids"]), **by_embeds, **greedy)
    assert torch.equal(generated, expected)


def test_v1_inputs_embeds_with_images_equals_input_ids(tiny_v1):
    model, processor = tiny_v1
    inputs = v1_inputs(processor)
    by_embeds = {key: value for key, value in inputs.items() if key != "input_ids"}
    with torch.no_grad():
        expected = model(**inputs).logits
        out = model(inputs_embeds=model.get_input_embeddings()(inputs["input_ids"]), **by_embeds).logits
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


# --- 6. get_image_features --------------------------------------------------------------------


def test_v2_image_features_are_per_image_pooled_outputs(either_tiny):
    model, processor = either_tiny
    inputs, _ = beam_batch(processor)
    with torch.no_grad():
        features = model.get_image_features(inputs["pixel_values"], inputs["image_grids"], output_hidden_states=True)
        as_tuple = model.get_image_features(inputs["pixel_values"], inputs["image_grids"], return_dict=False)
        out = model(**inputs)
    assert isinstance(features, BaseModelOutputWithPooling) and isinstance(as_tuple, tuple)
    lengths = [processor.image_processor.num_image_tokens(grid) for grid in inputs["image_grids"].tolist()]
    assert [len(tokens) for tokens in features.pooler_output] == lengths
    assert len(features.hidden_states) == model.config.vision_config.num_hidden_layers + 1
    image_positions = inputs["input_ids"] == model.config.image_token_id
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    written = embeds.masked_scatter(image_positions[..., None], torch.cat(features.pooler_output))
    assert torch.equal(written[image_positions], torch.cat(out.image_outputs.pooler_output))


def test_v1_image_features_are_per_image_pooled_outputs(tiny_v1):
    model, processor = tiny_v1
    inputs = v1_inputs(processor)
    with torch.no_grad():
        features = model.get_image_features(inputs["pixel_values"], inputs["prompt_input_ids"],
                                            inputs["prompt_attention_mask"])
        embeddings, _, _ = model.encode_images(inputs["pixel_values"], inputs["prompt_input_ids"],
                                               inputs["prompt_attention_mask"])
    assert len(features.pooler_output) == 2
    assert torch.equal(torch.stack(features.pooler_output), embeddings)


# --- 7. tensor-parallel plan and base model -----------------------------------------------------


def test_lm_head_has_a_tensor_parallel_plan_and_the_base_model_exists(tiny, tiny_v1):
    for model in (tiny[0], tiny_v1[0]):
        assert type(model)._tp_plan == {"lm_head": "colwise_gather_output"}
        assert model.base_model is not model and isinstance(getattr(model, model.base_model_prefix), torch.nn.Module)


# --- 8. processor keyword arguments -----------------------------------------------------------


def test_processor_honours_standard_image_options(tiny):
    _, processor = tiny
    image = random_image(40, 70, seed=3)
    plain = processor(images=[image], text=["<image> hi"])["pixel_values"]
    raw = processor(images=[image], text=["<image> hi"], do_normalize=False)["pixel_values"]
    mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
    torch.testing.assert_close((raw - mean) / std, plain)
    assert raw.min() >= 0 and raw.max() <= 1
    halved = processor(images=[image], text=["<image> hi"], images_kwargs={"rescale_factor": 0.5 / 255, "do_normalize": False})
    torch.testing.assert_close(halved["pixel_values"], raw / 2, atol=1e-6, rtol=0)
    one_tile = processor(images=[image], text=["<image> hi"], max_tiles=1)
    assert one_tile["image_grids"].tolist() == [[1, 1]] and processor(images=[image], text=["<image> hi"])["image_grids"].tolist() != [[1, 1]]
    with pytest.raises(ValueError, match="size"):
        processor(images=[image], text=["<image> hi"], size={"height": 10, "width": 10})


def test_v1_processor_honours_standard_image_options(tiny_v1):
    _, processor = tiny_v1
    image = random_image(64, 64)
    plain = processor(images=[image], text=["<image> hi"])["pixel_values"]
    raw = processor(images=[image], text=["<image> hi"], do_normalize=False)["pixel_values"]
    assert not torch.equal(plain, raw) and raw.min() >= 0 and raw.max() <= 1


def test_model_input_names_are_what_the_processor_returns(tiny, tiny_plain, tiny_v1):
    for processor in (tiny[1], tiny_plain[1]):
        inputs = processor(images=[random_image(40, 40)], text=["<image> hi"])
        assert set(inputs) == set(processor.model_input_names)
    inputs = v1_inputs(tiny_v1[1])
    assert set(inputs) == set(tiny_v1[1].model_input_names)


# --- found by running transformers' own common suites against these classes ------------------------------


def test_assisted_generation_with_images_is_refused_in_words(tiny_plain):
    model, processor = tiny_plain
    inputs, _ = beam_batch(processor)
    with pytest.raises(ValueError, match="the assistant model never sees them"):
        model.generate(**inputs, assistant_model=model, max_new_tokens=2)


def test_beam_search_from_inputs_embeds_alone(tiny_plain):
    model, processor = tiny_plain
    inputs, _ = beam_batch(processor)
    by_embeds = {key: value for key, value in inputs.items() if key != "input_ids"}
    options = {"num_beams": 2, "max_new_tokens": 3, "min_new_tokens": 3, "do_sample": False}
    with torch.no_grad():
        expected = model.generate(**inputs, **options)[:, inputs["input_ids"].shape[1]:]
        generated = model.generate(inputs_embeds=model.get_input_embeddings()(inputs["input_ids"]), **by_embeds, **options)
    assert torch.equal(generated, expected)


def test_processor_rescale_factor_may_leave_the_unit_range(tiny):
    _, processor = tiny
    image = random_image(40, 70, seed=3)
    raw = processor(images=[image], text=["<image> a"], do_normalize=False)["pixel_values"]
    doubled = processor(images=[image], text=["<image> a"], do_normalize=False, rescale_factor=2 / 255)["pixel_values"]
    torch.testing.assert_close(doubled, 2 * raw, atol=1e-5, rtol=0)


def test_images_load_from_urls(tiny, tmp_path):
    import functools
    import http.server
    import threading

    from PIL import Image

    image = random_image(30, 50, seed=4)
    Image.fromarray(image).save(tmp_path / "photo.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/photo.png"
        from_url = tiny[1](images=[url], text=["<image> a"])["pixel_values"]
        with pytest.raises(ValueError, match="could not fetch the image at"):
            tiny[1](images=[url.replace("photo", "missing")], text=["<image> a"])
    finally:
        server.shutdown()
    torch.testing.assert_close(from_url, tiny[1](images=[image], text=["<image> a"])["pixel_values"])


class FavourPlaceholders:
    """A logits processor that pushes the placeholder tokens far above everything else."""

    def __init__(self, ids):
        self.ids = ids

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.ids] += 1e4
        return scores


def test_placeholder_tokens_are_never_generated(either_tiny):
    model, processor = either_tiny
    placeholders = model.config.placeholder_token_ids()
    inputs = processor(images=[GOOD_IMAGE], text=["<image> What is <region>?"], regions=[[{"box": [1, 1, 9, 9]}]])
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, logits_processor=[FavourPlaceholders(placeholders)],
                             do_sample=False, use_cache=False)
    sequences = out if torch.is_tensor(out) else out.sequences
    new = sequences[:, inputs["input_ids"].shape[1]:]
    assert not torch.isin(new, torch.tensor([model.config.image_token_id, model.config.region_token_id])).any()


def test_v1_base_model_is_the_model_without_head(tiny_v1):
    model, _ = tiny_v1
    assert type(model.base_model).__name__ == "VisionLLMv1Model"
    assert "lm_head" not in dict(model.base_model.named_children())


def test_past_key_values_warns_where_transformers_renamed_it(tiny_plain):
    from transformers.cache_utils import DynamicCache

    from visionllm_hf.modeling.transformers_compat import CACHE_NAME

    model, processor = tiny_plain
    inputs = processor(text=["hello"])
    cache = DynamicCache(config=model.config.text_config)
    with torch.no_grad():
        if CACHE_NAME == "cache":
            with pytest.warns(FutureWarning, match="pass the KV cache as `cache`"):
                model(**inputs, past_key_values=cache, use_cache=True)
        else:
            model(**inputs, past_key_values=cache, use_cache=True)  # the current name: no notice
            assert cache.get_seq_length() == inputs["input_ids"].shape[1]
