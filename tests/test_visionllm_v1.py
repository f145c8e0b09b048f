"""VisionLLM (v1): location tokens, output-format-as-query decoding, class sets, trust_remote_code loading."""

import pytest
import torch
from transformers.cache_utils import DynamicCache

from visionllm_hf.builder.v1 import build_tiny_v1
from visionllm_hf.modeling.modeling_visionllm_v1 import decode_location, encode_location, format_query_ids
from visionllm_hf.modeling.transformers_compat import cache_argument
from visionllm_hf.processing.processing_visionllm_v1 import location_token

from .helpers import random_image
from .test_hub_packaging import run_in_fresh_environment

PROMPT = "<image> Please detect the objects of <class> in the image. The range of coordinates is <range>."


@pytest.fixture(scope="module")
def tiny_v1():
    model, processor = build_tiny_v1(seed=0, num_image_tokens=12)
    return model.eval(), processor


def inputs_for(processor, categories=(("circle", "square"), ("triangle",))):
    images = [random_image(48, 64, seed=1), random_image(80, 40, seed=2)]
    texts = [PROMPT, "<image> Find every <class>."]  # different lengths: left padding in the batch
    return processor(images=images, text=texts, categories=[list(c) for c in categories])


@pytest.mark.parametrize("bins", [257, 513, 1025, 2049])
def test_location_tokens_round_trip_within_half_a_bin(bins):
    location_range = (bins - 1) // 2
    generator = torch.Generator().manual_seed(bins)
    coordinates, references = torch.rand(10_000, generator=generator), torch.rand(10_000, generator=generator)
    offsets = encode_location(coordinates, references, location_range)
    assert offsets.min() >= -location_range and offsets.max() <= location_range
    error = (decode_location(offsets, references, location_range) - coordinates).abs()
    assert error.max() <= 0.5 / location_range + 1e-6
    assert error.max() > 0.4 / location_range  # the bound is tight, so the bin width is what we think


def test_every_v1_token_is_one_id(tiny_v1):
    model, processor = tiny_v1
    config, tokenizer = model.config, processor.tokenizer
    for offset in (-config.location_range, -1, 0, 7, config.location_range):
        ids = tokenizer.encode(location_token(offset), add_special_tokens=False)
        assert ids == [config.location_token_start_id + offset + config.location_range]
    assert tokenizer.encode("<c511>", add_special_tokens=False) == [config.class_token_start_id + 511]
    assert tokenizer.convert_ids_to_tokens(format_query_ids(config, 5)) == ["<cls>", "<x1>", "<y1>", "<x2>", "<y2>"]
    with pytest.raises(ValueError, match="odd fields"):
        format_query_ids(config, 4)


def test_parallel_decoding_equals_decoding_each_slot_alone(tiny_v1):
    model, processor = tiny_v1
    inputs = inputs_for(processor)
    assert (inputs["attention_mask"] == 0).any()  # the batch is padded
    with torch.no_grad():
        parallel = model.decode_objects(**inputs, num_fields=5).logits
        image_embeddings, _, _ = model.encode_images(inputs["pixel_values"], inputs["prompt_input_ids"], inputs["prompt_attention_mask"])
        prefix = model.model.prompt_embeddings(inputs["input_ids"], image_embeddings)
        mask = inputs["attention_mask"]
        prompt_positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = DynamicCache(config=model.config.text_config)
        model.model.language_model(inputs_embeds=prefix, attention_mask=mask, position_ids=prompt_positions, use_cache=True, **cache_argument(cache))
        length = prefix.shape[1]
        queries = model.get_input_embeddings()(torch.tensor(format_query_ids(model.config, 5)))
        start = mask.sum(-1, keepdim=True)
        for slot in range(image_embeddings.shape[1]):
            embeds = queries[None] + image_embeddings[:, slot, None]
            hidden = model.model.language_model(
                inputs_embeds=embeds, attention_mask=torch.cat([mask, torch.ones(len(mask), 5, dtype=mask.dtype)], 1),
                position_ids=start + torch.arange(5), use_cache=True, **cache_argument(cache),
            ).last_hidden_state
            cache.crop(-5)  # the next slot sees the prompt only
            torch.testing.assert_close(parallel[:, slot], model.lm_head(hidden), atol=1e-5, rtol=0)


def test_only_the_instructions_classes_are_predicted(tiny_v1):
    model, processor = tiny_v1
    inputs = inputs_for(processor)
    with torch.no_grad():
        decoded = model.decode_objects(**inputs, num_fields=5)
    config = model.config
    decoded.logits[..., 0, config.class_token_start_id + 5] += 1e4  # <c5> wins everywhere if it were allowed
    decoded.logits[1, :, 0, config.class_token_start_id] += 50.0  # sample 1: <c0> beats <c-none>
    results = processor.post_process_object_detection(
        decoded, config, [["circle", "square"], ["triangle"]], target_sizes=[(48, 64), (80, 40)], threshold=0.5
    )
    assert set(results[0]["labels"]) <= {"circle", "square"}
    assert results[1]["labels"] == ["triangle"] * 12
    boxes = results[1]["boxes"]
    assert boxes.shape == (12, 4) and (boxes[:, [0, 2]] <= 40).all() and (boxes[:, [1, 3]] <= 80).all()


def test_wrong_placeholder_counts_are_named(tiny_v1):
    _, processor = tiny_v1
    with pytest.raises(ValueError, match="1 texts, 2 images"):
        processor(images=[random_image(8, 8), random_image(8, 8)], text=["<image> hi"])
    with pytest.raises(ValueError, match="2 <image> placeholders"):
        processor(images=[random_image(8, 8)], text=["<image><image> hi"])
    with pytest.raises(ValueError, match="no categories"):
        processor(images=[random_image(8, 8)], text=["<image> find <class>"])


def test_training_the_object_decoder_on_one_image_finds_its_box():
    model, processor = build_tiny_v1(seed=1, num_image_tokens=12)
    inputs = inputs_for(processor)
    targets = [
        {"classes": [1], "points": [[0.2, 0.3, 0.6, 0.9]]},
        {"classes": [0, 0], "points": [[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]]},
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(120):
        loss = model.decode_objects(**inputs, num_fields=5, object_targets=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.4 * losses[0]
    model.eval()
    with torch.no_grad():
        decoded = model.decode_objects(**inputs, num_fields=5)
    results = processor.post_process_object_detection(decoded, model.config, [["circle", "square"], ["triangle"]])
    errors = (results[0]["boxes"] - torch.tensor([0.2, 0.3, 0.6, 0.9])).abs().max(-1).values
    closest = int(errors.argmin())  # the slot training matched to the object
    assert errors[closest] < 0.15 and results[0]["labels"][closest] == "square"


def test_v1_checkpoint_loads_without_the_package(tmp_path):
    from visionllm_hf.cli import main

    folder = tmp_path / "v1"
    assert main(["build", "--preset", "tiny-v1", "--seed", "0", "--out", str(folder)]) == 0
    model, processor = build_tiny_v1(seed=0)  # what the command built (M = 100)
    model.eval()
    images = [random_image(48, 64, seed=1), random_image(80, 40, seed=2)]
    kwargs = {"images": images, "text": [PROMPT, "<image> Find every <class>."], "categories": [["a", "b"], ["c"]]}
    loaded = run_in_fresh_environment("fresh_env_v1.py", folder, kwargs, tmp_path)
    inputs = processor(**kwargs)
    with torch.no_grad():
        expected = model.decode_objects(**inputs, num_fields=5).logits
        logits = model(**inputs).logits
    assert (loaded["objects"] - expected).abs().max() <= 1e-5
    assert (loaded["logits"] - logits).abs().max() <= 1e-5


@pytest.mark.parametrize("stage", ["v1-stage1", "v1-stage2", "v1-from-scratch"])
def test_v1_stages_freeze_and_train_what_they_say(stage):
    from visionllm_hf.trainer.stages import STAGES, apply_stage, build_optimizer, module_group

    model, processor = build_tiny_v1(seed=0, num_image_tokens=8)
    with pytest.raises(ValueError, match="is for visionllm models, not visionllm_v1"):
        apply_stage(build_tiny_v1(seed=0, num_image_tokens=4)[0], "v2-tune")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trained = apply_stage(model, stage)
    optimizer = build_optimizer(trained, stage)
    preset = STAGES[stage]
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == preset.learning_rates
    inputs = inputs_for(processor)
    targets = [{"classes": [1], "points": [[0.2, 0.3, 0.6, 0.9]]}, {"classes": [0], "points": [[0.1, 0.1, 0.4, 0.5]]}]
    trained.train()
    for _ in range(2):
        loss = trained(**inputs, object_targets=targets).loss  # forward routes to decode_objects
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = set()
    for name, parameter in trained.named_parameters():
        original = before.get(name.removeprefix("base_model.model.").replace(".base_layer", ""))
        if original is None or original.shape != parameter.shape:
            continue
        if not torch.equal(original, parameter.detach()):
            changed.add(module_group(name))
            assert module_group(name) in preset.learning_rates, f"{stage}: frozen {name} changed"
    assert set(preset.learning_rates) - {"llm"} <= changed
    assert ("image_backbone" in changed) == (stage != "v1-stage2")


def test_boundary_points_decode_to_polygons_and_masks_in_pixels(tiny_v1):
    model, processor = tiny_v1
    inputs = inputs_for(processor)
    with torch.no_grad():
        decoded = model.decode_objects(**inputs, num_fields=1 + 2 * 8)  # <cls> and 8 boundary points
    assert decoded.logits.shape[:3] == (2, 12, 17)
    results = processor.post_process_generation(decoded, model.config, [["a", "b"], ["c"]], target_sizes=[(48, 64), (80, 40)])
    for result, (height, width) in zip(results, [(48, 64), (80, 40)]):
        polygons, masks, boxes = result["polygons"], result["masks"], result["boxes"]
        assert polygons.shape == (12, 8, 2) and masks.shape == (12, height, width) and masks.dtype == torch.bool
        assert masks.flatten(1).any(-1).all()  # random polygons still cover pixels
        assert (polygons[..., 0] <= width).all() and (polygons[..., 1] <= height).all()
        for mask, box in zip(masks, boxes):
            rows, columns = mask.nonzero(as_tuple=True)
            if len(rows):  # every mask pixel lies inside the polygon's box
                assert columns.min() >= box[0] - 1 and columns.max() <= box[2] + 1
                assert rows.min() >= box[1] - 1 and rows.max() <= box[3] + 1


def test_cli_fine_tunes_a_v1_checkpoint_on_coco_data(tmp_path):
    import json

    from safetensors.torch import load_file
    from transformers import AutoModel

    from visionllm_hf.cli import main

    base, data, output = tmp_path / "base", tmp_path / "data", tmp_path / "run"
    assert main(["build", "--preset", "tiny-v1", "--out", str(base)]) == 0
    assert main(["synth", "--out", str(data), "--num-images", "6", "--seed", "0"]) == 0
    argv = [
        "train", "--model", str(base), "--stage", "v1-stage1", "--output_dir", str(output), "--max_steps", "3",
        "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_steps", "3", "--use_cpu",
        "--report_to", "none", "--data", f"v1detection={data / 'instances.json'},images={data / 'images'}",
    ]
    assert main(argv) == 0
    losses = [e["loss"] for e in json.loads((output / "checkpoint-3" / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    before, after = load_file(base / "model.safetensors"), load_file(output / "model.safetensors")  # merged
    changed = {key.split(".")[1] for key in before if key.startswith("model.") and not torch.equal(before[key], after[key])}
    assert {"image_tokenizer", "projector", "language_model"} <= changed
    assert type(AutoModel.from_pretrained(output)).__name__ == "VisionLLMv1ForConditionalGeneration"
    assert "language-guided deformable_detr" in (output / "README.md").read_text()
    with pytest.raises(ValueError, match="v1detection data trains VisionLLM v1 checkpoints"):
        main(["train", "--model", str(base), "--output_dir", str(tmp_path / "bad"), "--stage", "v1-stage1",
              "--max_steps", "1", "--use_cpu", "--data", f"conversation={data / 'conversations.json'},images={data / 'images'}"])
