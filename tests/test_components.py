"""Any transformers vision tower (CLIP, SigLIP, timm through TimmWrapper) and causal LM (Llama, Qwen2) plug in."""

import pytest
import torch
from transformers import AutoModel, Qwen2Config, SiglipVisionConfig, TimmWrapperConfig

from visionllm_hf import VisionLLMForConditionalGeneration
from visionllm_hf.builder import add_special_tokens, build_processor, make_config, train_tiny_tokenizer
from visionllm_hf.builder.presets import tiny_text_config, tiny_vision_config

from .helpers import random_image

TOWERS = {
    "clip": lambda: tiny_vision_config(),
    "siglip": lambda: SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    ),
    "timm-vit": lambda: TimmWrapperConfig(
        architecture="vit_tiny_patch16_224", model_args={"img_size": 32, "patch_size": 8, "depth": 2}
    ),
    "timm-resnet": lambda: TimmWrapperConfig(architecture="resnet18", model_args={"layers": [1, 1, 1, 1]}),
}


def build(vision_config, text_config=None, **fields):
    tokenizer = train_tiny_tokenizer()
    token_ids = add_special_tokens(tokenizer)
    text_config = text_config or tiny_text_config(len(tokenizer))
    config = make_config(vision_config, text_config, **token_ids, **fields)
    torch.manual_seed(0)
    return VisionLLMForConditionalGeneration(config).eval(), build_processor(config, tokenizer)


@pytest.mark.parametrize("tower", TOWERS)
def test_vision_tower_builds_saves_and_reloads(tower, tmp_path):
    model, processor = build(TOWERS[tower]())
    inputs = processor(images=[random_image(30, 90), random_image(64, 64)], text=["<image> a", "b <image>"])
    with torch.no_grad():
        logits = model(**inputs).logits
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded.model.vision_tower) is type(model.model.vision_tower)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, logits, atol=1e-5, rtol=0)


def test_timm_feature_shape_is_probed_from_the_tower():
    model, processor = build(TOWERS["timm-resnet"](), vision_feature_layer=-1, tile_size=64)
    # resnet's last stage: 512 channels at stride 32, so a 64 px tile is a 2x2 map = 4 tokens
    assert model.config.vision_feature_dim == 512
    assert model.config.image_seq_length == processor.image_processor.image_seq_length == 4


def test_timm_vit_tile_size_is_its_input_size():
    model, _ = build(TOWERS["timm-vit"]())
    assert model.config.tile_size == 32 and model.config.image_seq_length == (32 // 8) ** 2


def test_siglip_keeps_every_patch_token():
    model, _ = build(TOWERS["siglip"]())
    assert model.config.vision_feature_select_strategy == "full"
    assert model.config.image_seq_length == (32 // 8) ** 2


def test_qwen2_language_model(tmp_path):
    tokenizer_size = len(train_tiny_tokenizer()) + 9
    text = Qwen2Config(
        vocab_size=tokenizer_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )
    model, processor = build(tiny_vision_config(), text)
    assert type(model.model.language_model).__name__ == "Qwen2Model"
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied as the LLM asks
    inputs = processor(images=[random_image(40, 40)], text=["<image> hi"])
    generated = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
