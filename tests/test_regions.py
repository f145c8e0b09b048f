"""Visual prompts: geometry of the masks, both region encoders, training and generation with regions."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from visionllm_hf import VisionLLMForConditionalGeneration
from visionllm_hf.builder import add_special_tokens, build_processor, make_config, train_tiny_tokenizer
from visionllm_hf.builder.presets import tiny_text_config, tiny_vision_config
from visionllm_hf.processing.regions import rasterize_region

from .helpers import random_image

TILE, CELL = 32, 8  # tiny preset: 32 px tiles, 8 px patches -> a 4x4 feature grid
ENCODERS = ("visionllm_v2", "regiongpt")


def build(encoder: str):
    tokenizer = train_tiny_tokenizer()
    config = make_config(
        tiny_vision_config(), tiny_text_config(len(tokenizer) + 9), vision_feature_layer=-1,
        region_encoder_type=encoder, region_conv_channels=[8, 16], **add_special_tokens(tokenizer),
    )
    torch.manual_seed(0)
    return VisionLLMForConditionalGeneration(config).eval(), build_processor(config, tokenizer)


@pytest.fixture(scope="module", params=ENCODERS)
def encoder_model(request):
    return build(request.param)


def rasterize(region, size=(100, 200)):
    return rasterize_region(region, size, TILE, CELL, where="sample 0, region 0")


# --- mask geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [[10, 10, 150, 60], [0, 0, 200, 100], [33.3, 12.7, 91.9, 88.1]])
def test_box_mask_matches_the_resized_box_within_a_pixel(box):
    height, width = 100, 200
    mask = rasterize({"box": box}, (height, width))
    x1, y1, x2, y2 = box[0] * TILE / width, box[1] * TILE / height, box[2] * TILE / width, box[3] * TILE / height
    rows, columns = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    assert abs(int(columns.min()) - x1) <= 1 and abs(int(columns.max()) + 1 - x2) <= 1
    assert abs(int(rows.min()) - y1) <= 1 and abs(int(rows.max()) + 1 - y2) <= 1
    assert (x2 - x1 - 1) * (y2 - y1 - 1) <= mask.sum() <= (x2 - x1 + 1) * (y2 - y1 + 1)
    assert mask.sum() == len(rows) * len(columns)  # a filled rectangle


@pytest.mark.parametrize("point", [[0, 0], [199.9, 99.9], [57, 41], [200, 100]])
def test_point_covers_exactly_the_feature_cell_it_falls_in(point):
    mask = rasterize({"point": point})
    cells = torch.nn.functional.avg_pool2d(mask[None].float(), CELL)[0]
    assert (cells == 1).sum() == 1 and (cells > 0).sum() == 1
    row, column = (cells == 1).nonzero()[0].tolist()
    x, y = point[0] * TILE / 200, point[1] * TILE / 100
    assert column == min(int(x // CELL), TILE // CELL - 1) and row == min(int(y // CELL), TILE // CELL - 1)


def test_scribble_passes_through_its_points_and_polygon_fills_its_area():
    scribble = rasterize({"scribble": [[10, 10], [190, 10], [190, 90]]})
    for x, y in [(10, 10), (100, 10), (190, 50), (190, 90)]:
        assert scribble[min(int(y * TILE / 100), TILE - 1), min(int(x * TILE / 200), TILE - 1)]
    polygon = rasterize({"polygon": [[0, 0], [200, 0], [0, 100]]})  # half the image
    assert abs(polygon.float().mean().item() - 0.5) < 0.06


def test_mask_regions_follow_the_image_resize():
    height, width = 100, 200
    mask = np.zeros((height, width), dtype=bool)
    mask[25:75, 50:150] = True
    resized = rasterize({"mask": mask}, (height, width))
    assert resized.sum() == 16 * 16  # a quarter of each side off, at a 32 px tile
    assert torch.equal(rasterize(mask, (height, width)), resized)  # a bare array is a mask
    assert torch.equal(rasterize(Image.fromarray(mask.astype(np.uint8) * 255), (height, width)), resized)
    thin = np.zeros((height, width), dtype=bool)
    thin[50, 10:20] = True  # a 1 px line still covers the pixels it touches
    assert rasterize({"mask": thin}, (height, width)).any()


@pytest.mark.parametrize(
    "region, message",
    [
        ({"mask": np.zeros((100, 200))}, "empty"),
        ({"mask": np.ones((50, 50))}, "height x width"),
        ({"box": [10, 10, 250, 60]}, "outside the 200x100 image"),
        ({"point": [-1, 5]}, "outside"),
        ({"scribble": [[0, 0], [0, 300]]}, "outside"),
        ({"box": [50, 10, 20, 60]}, "x2 > x1"),
        ({"polygon": [[0, 0], [5, 5]]}, "at least 3"),
        ({"circle": [1, 2, 3]}, "exactly one of"),
    ],
)
def test_bad_regions_raise_naming_the_sample_and_region(region, message):
    with pytest.raises(ValueError, match=message) as error:
        rasterize(region)
    assert "sample 0, region 0" in str(error.value)


def test_processor_checks_region_counts_per_sample(tiny):
    _, processor = tiny
    images = [random_image(60, 60, seed=1), random_image(60, 90, seed=2)]
    box = {"box": [0, 0, 30, 30]}
    with pytest.raises(ValueError, match="sample 1 has 1 <region> placeholders but 2 regions"):
        processor(images=images, text=["<image> hi", "<image> <region>"], regions=[[], [box, box]])
    with pytest.raises(ValueError, match="sample 0, region 1: the box .* outside the 60x60 image"):
        processor(images=images, text=["<image> <region> <region>", "<image>"],
                  regions=[[box, {"box": [0, 0, 80, 30]}], []])
    with pytest.raises(ValueError, match="sample 0 has 1 <region> placeholders but 0 regions"):
        processor(images=images[:1], text=["<image> <region>"])


def test_processor_regions_per_image_or_per_sample(tiny):
    _, processor = tiny
    images = [random_image(60, 60, seed=1), random_image(60, 90, seed=2), random_image(40, 40, seed=3)]
    texts = ["<image> <image> <region> then <region>", "<image> no regions"]
    first, second = {"box": [0, 0, 30, 30]}, {"point": [80, 50]}
    flat = processor(images=images, text=texts, regions=[[first], [second], []])
    nested = processor(images=[images[:2], images[2:]], text=texts, regions=[[[first], [second]], [[]]])
    for key in ("region_masks", "region_image_index", "input_ids"):
        assert torch.equal(flat[key], nested[key])
    assert flat["region_image_index"].tolist() == [0, 1]
    assert flat["region_masks"].shape == (2, TILE, TILE)
    assert (flat["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<region>")).sum() == 2


# --- the encoders ---------------------------------------------------------------------------------


def region_inputs(processor, regions, image=None):
    image = random_image(64, 64, seed=5) if image is None else image
    placeholders = " ".join(["<region>"] * len(regions))
    return processor(images=[image], text=[f"<image> what is {placeholders}?"], regions=[regions])


def test_full_image_mask_is_the_projected_mean_of_the_feature_map(encoder_model):
    model, processor = encoder_model
    inputs = region_inputs(processor, [{"mask": np.ones((64, 64), dtype=bool)}])
    core = model.model
    with torch.no_grad():
        _, _, maps = core._encode_images(inputs["pixel_values"])
        embedding = core.get_region_features(
            maps, inputs["pixel_values"], inputs["image_grids"], inputs["region_masks"], inputs["region_image_index"]
        )
        global_view = inputs["pixel_values"][-1:]
        grid = model.config.feature_grid_size
        features = core.get_vision_features(global_view).transpose(1, 2).unflatten(2, (grid, grid))
        if model.config.region_encoder_type == "regiongpt":
            pooled = core.region_encoder.refine(features).mean(dim=(2, 3))
            expected = core.multi_modal_projector(pooled)
        else:
            ones = torch.ones(1, 1, TILE, TILE)
            prompt = torch.nn.functional.interpolate(
                torch.cat([global_view, ones], 1), size=(grid * 14, grid * 14), mode="bilinear", antialias=True
            )
            pooled = (core.region_encoder.convs(prompt) + features).mean(dim=(2, 3))
            expected = core.region_encoder.projector(pooled)
    torch.testing.assert_close(embedding, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["point", "box", "scribble", "polygon"])
def test_small_regions_give_finite_distinct_embeddings(encoder_model, kind):
    model, processor = encoder_model
    region = {"point": {"point": [3, 3]}, "box": {"box": [40, 40, 41, 41]},
              "scribble": {"scribble": [[1, 60], [2, 62]]}, "polygon": {"polygon": [[50, 5], [55, 5], [52, 9]]}}[kind]
    inputs = region_inputs(processor, [region, {"mask": np.ones((64, 64), dtype=bool)}])
    with torch.no_grad():
        _, _, maps = model.model._encode_images(inputs["pixel_values"])
        embeddings = model.model.get_region_features(
            maps, inputs["pixel_values"], inputs["image_grids"], inputs["region_masks"], inputs["region_image_index"]
        )
    assert torch.isfinite(embeddings).all()
    assert not torch.allclose(embeddings[0], embeddings[1])


def test_region_embeddings_land_in_the_region_positions(encoder_model):
    model, processor = encoder_model
    inputs = region_inputs(processor, [{"box": [0, 0, 20, 20]}, {"point": [50, 50]}])
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    with torch.no_grad():
        model(**inputs)
        _, _, maps = model.model._encode_images(inputs["pixel_values"])
        expected = model.model.get_region_features(
            maps, inputs["pixel_values"], inputs["image_grids"], inputs["region_masks"], inputs["region_image_index"]
        )
    hook.remove()
    positions = inputs["input_ids"][0] == model.config.region_token_id
    torch.testing.assert_close(captured["embeds"][0, positions], expected)


def test_lm_loss_reaches_every_region_encoder_parameter(encoder_model):
    model, processor = encoder_model
    inputs = region_inputs(processor, [{"box": [0, 0, 40, 30]}, {"scribble": [[5, 50], [60, 60]]}])
    model.zero_grad()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    for name, parameter in model.model.region_encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.zero_grad()


def test_batched_generation_with_and_without_regions_equals_per_sample(encoder_model):
    model, processor = encoder_model
    images = [random_image(40, 100, seed=1), random_image(80, 80, seed=2)]
    texts = ["<image> Describe the picture.", "<image> Compare <region> with <region>."]
    regions = [[], [{"box": [10, 10, 60, 50]}, {"polygon": [[0, 0], [40, 0], [0, 40]]}]]
    batch = processor(images=images, text=texts, regions=regions)
    generated = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    new_tokens = generated[:, batch["input_ids"].shape[1]:]
    for index in range(2):
        single = processor(images=[images[index]], text=[texts[index]], regions=[regions[index]])
        alone = model.generate(**single, max_new_tokens=6, min_new_tokens=6, do_sample=False)
        assert new_tokens[index].tolist() == alone[0, single["input_ids"].shape[1]:].tolist(), index


def test_region_inputs_go_in_at_prefill_only(encoder_model):
    model, processor = encoder_model
    inputs = region_inputs(processor, [{"box": [0, 0, 20, 20]}])
    seen = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append("region_masks" in kwargs and kwargs["region_masks"] is not None),
        with_kwargs=True,
    )
    model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    hook.remove()
    assert seen == [True, False, False, False]


def test_regions_in_a_multi_turn_conversation(tiny):
    model, processor = tiny
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is <region>?"}]},
        {"role": "assistant", "content": "A circle."},
        {"role": "user", "content": "And <region>?"},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[random_image(50, 50)], text=[prompt],
                       regions=[[{"box": [0, 0, 25, 25]}, {"point": [40, 40]}]])
    assert (inputs["input_ids"] == model.config.region_token_id).sum() == 2
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_model_without_region_encoder_rejects_regions():
    model, processor = build(None)
    assert model.model.region_encoder is None
    inputs = region_inputs(processor, [{"box": [0, 0, 20, 20]}])
    with pytest.raises(ValueError, match="region encoder"):
        model(**inputs)
