import pytest
import torch

GREEDY_8 = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "return_dict_in_generate": False}

from .helpers import random_image


def test_image_features_land_in_the_placeholder_positions(tiny):
    model, processor = tiny
    images = [random_image(30, 90, seed=1), random_image(60, 60, seed=2)]
    inputs = processor(images=[images], text=["look <image> and <image> now"])
    with torch.no_grad():
        out = model.model(**inputs)
        per_image = model.get_image_features(inputs["pixel_values"], inputs["image_grids"]).pooler_output
        features = torch.cat(per_image)
        text_only = model.model(input_ids=inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, 0))
    assert [len(tokens) for tokens in per_image] == [
        processor.image_processor.num_image_tokens(grid) for grid in inputs["image_grids"].tolist()
    ]
    assert torch.equal(out.image_hidden_states.flatten(0, 1), features)
    assert all(torch.equal(a, b) for a, b in zip(out.image_outputs.pooler_output, per_image))
    # the image features must change the LLM's states; text before the first image must not be affected
    first_image = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    torch.testing.assert_close(out.last_hidden_state[0, :first_image], text_only.last_hidden_state[0, :first_image])
    assert not torch.allclose(out.last_hidden_state[0, first_image:], text_only.last_hidden_state[0, first_image:])


def test_image_features_are_computed_from_the_selected_vision_layer(tiny):
    model, processor = tiny
    pixel_values = processor.image_processor(random_image(32, 32))["pixel_values"]
    with torch.no_grad():
        hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        expected = model.model.multi_modal_projector(hidden[model.config.vision_feature_layer][:, 1:])
        torch.testing.assert_close(model.get_image_features(pixel_values).pooler_output[0], expected[0])


def test_lm_loss_is_cross_entropy_over_unmasked_shifted_labels(tiny):
    model, processor = tiny
    inputs = processor(images=[random_image(40, 40)], text=["<image> describe: two shapes"])
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    logits, targets = out.logits[0, :-1], labels[0, 1:]
    expected = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_loss_back_propagates_into_tower_projector_and_llm(tiny):
    model, processor = tiny
    inputs = processor(images=[random_image(40, 40)], text=["<image> describe"])
    model.zero_grad()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    for name in ("vision_tower", "multi_modal_projector", "language_model"):
        grads = [p.grad for p in getattr(model.model, name).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    model.zero_grad()


def test_placeholder_count_not_matching_features_raises(tiny):
    model, processor = tiny
    inputs = processor(images=[random_image(40, 40)], text=["<image> hi"])
    truncated = inputs["input_ids"][:, 5:]  # cut into the image tokens
    with pytest.raises(ValueError, match=r"\d+ <image> tokens in input_ids but \d+ features"):
        model(input_ids=truncated, pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="tiles but image_grids announce"):
        model(**{**inputs, "pixel_values": inputs["pixel_values"][:-1]})


def test_sdpa_attention_is_the_default(tiny):
    model, _ = tiny
    assert model.config._attn_implementation == "sdpa"
    assert model.model.language_model.config._attn_implementation == "sdpa"


def test_batched_greedy_generation_with_left_padding_equals_per_sample(either_tiny, chat_prompt):
    model, processor = either_tiny
    prompts = [chat_prompt("What?"), chat_prompt("Describe every shape you can see in this picture."), "<image> hi"]
    images = [random_image(40, 160, seed=1), random_image(70, 70, seed=2), random_image(200, 50, seed=3)]
    batch = processor(images=images, text=prompts)
    assert (batch["attention_mask"] == 0).any(), "prompts must differ in length to exercise padding"
    generated = model.generate(**batch, **GREEDY_8)
    new_tokens = generated[:, batch["input_ids"].shape[1] :]
    for index, (prompt, image) in enumerate(zip(prompts, images)):
        single = processor(images=[image], text=[prompt])
        alone = model.generate(**single, **GREEDY_8)
        assert new_tokens[index].tolist() == alone[0, single["input_ids"].shape[1] :].tolist(), index


def test_generation_with_kv_cache_equals_recomputing_everything(either_tiny, chat_prompt):
    model, processor = either_tiny
    inputs = processor(images=[random_image(50, 100)], text=[chat_prompt("What is it?")])
    cached = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, return_dict_in_generate=False)
    if model.decoders is None:  # transformers' own loop can also run without a cache
        uncached = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, use_cache=False)
        assert cached.tolist() == uncached.tolist()
    # the greedy tokens are the argmax of a full forward over the growing sequence
    sequence = inputs["input_ids"]
    for _ in range(6):
        with torch.no_grad():
            logits = model(input_ids=sequence, pixel_values=inputs["pixel_values"]).logits[:, -1]
        sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    assert cached.tolist() == sequence.tolist()


def test_device_map_planning_keeps_every_decoder_whole(tiny):
    from accelerate import infer_auto_device_map

    model, _ = tiny
    assert {"ObjectDecoder", "PromptableMaskDecoder", "SuperLink"} <= set(model._no_split_modules)
    plan = infer_auto_device_map(
        model, max_memory={0: "300KB", 1: "900KB", "cpu": "1GB"}, no_split_module_classes=list(model._no_split_modules)
    )
    for name in model.decoders:
        prefix = f"decoders.{name}"
        placed = {device for key, device in plan.items() if key.startswith(prefix) or prefix.startswith(key)}
        assert len(placed) == 1, (name, placed)
