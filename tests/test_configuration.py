import dataclasses

import pytest
from transformers import CLIPVisionConfig, PreTrainedConfig, TimmWrapperConfig

from visionllm_hf import VisionLLMConfig
from visionllm_hf.processing import SPECIAL_TOKENS


def test_defaults_describe_clip_l_336_with_four_tiles():
    config = VisionLLMConfig()
    assert config.vision_config.model_type == "clip_vision_model"
    assert config.text_config.model_type == "llama"
    assert config.tile_size == 336 and config.max_tiles == 4 and config.use_global_view
    assert config.image_seq_length == 576  # (336 / 14) ** 2, as in the paper
    assert config.vision_feature_dim == 1024


def test_every_saved_key_is_a_declared_field():
    config = VisionLLMConfig()
    declared = {field.name for field in dataclasses.fields(config)}
    base = {field.name for field in dataclasses.fields(PreTrainedConfig)}
    base |= {"model_type", "_name_or_path", "output_attentions"}  # written by PreTrainedConfig itself
    assert set(config.to_dict()) - declared - base == set()
    assert {field for field in SPECIAL_TOKENS} <= declared  # every special token id is a field


def test_round_trip_through_dict(tmp_path):
    config = VisionLLMConfig(max_tiles=6, use_global_view=False, image_token_id=7, tile_grids=[[1, 1], [2, 3]])
    config.save_pretrained(tmp_path)
    reloaded = VisionLLMConfig.from_pretrained(tmp_path)
    assert reloaded.max_tiles == 6 and not reloaded.use_global_view and reloaded.image_token_id == 7
    assert reloaded.tile_grids == [[1, 1], [2, 3]]
    assert reloaded.vision_config.hidden_size == config.vision_config.hidden_size


def test_towers_without_geometry_must_state_it():
    timm = TimmWrapperConfig(architecture="resnet18")
    with pytest.raises(ValueError, match="vision_feature_dim"):
        VisionLLMConfig(vision_config=timm)
    config = VisionLLMConfig(vision_config=timm, vision_feature_dim=512, tile_size=224, image_seq_length=49)
    assert config.image_seq_length == 49


def test_invalid_tile_budget_and_types_are_rejected():
    with pytest.raises(ValueError, match="min_tiles <= max_tiles"):
        VisionLLMConfig(min_tiles=3, max_tiles=2)
    with pytest.raises(Exception, match="max_tiles"):
        VisionLLMConfig(max_tiles="four")


def test_tile_size_follows_the_vision_tower():
    vision = CLIPVisionConfig(image_size=224, patch_size=16)
    config = VisionLLMConfig(vision_config=vision)
    assert config.tile_size == 224 and config.image_seq_length == 196
