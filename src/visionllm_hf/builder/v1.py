"""VisionLLM (v1) checkpoints: its vocabulary (location, class and format tokens) and a tiny random build."""

import torch
from transformers import BertConfig, DeformableDetrConfig, PreTrainedTokenizerBase, ResNetConfig, ViTImageProcessor

from ..modeling.configuration_visionllm_v1 import MAX_BOUNDARY_POINTS, VisionLLMv1Config
from ..modeling.modeling_visionllm_v1 import VisionLLMv1ForConditionalGeneration
from ..processing.image_processing_visionllm import IMAGENET_MEAN, IMAGENET_STD
from ..processing.processing_visionllm_v1 import VisionLLMv1Processor, class_token, location_token
from .presets import tiny_text_config


def add_v1_tokens(tokenizer: PreTrainedTokenizerBase, num_location_bins: int, num_classes: int) -> dict[str, int]:
    """Add `<image>`, `<p-R>`..`<pR>`, `<c0>`..`<cK-1>`, `<c-none>`, `<cls>`, `<x1> <y1>`..`<x24> <y24>` (one id each)."""
    location_range = (num_location_bins - 1) // 2
    locations = [location_token(i) for i in range(-location_range, location_range + 1)]
    classes = [class_token(i) for i in range(num_classes)]
    coordinates = [f"<{axis}{k}>" for k in range(1, MAX_BOUNDARY_POINTS + 1) for axis in "xy"]
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<image>", "<c-none>", "<cls>", *locations, *classes, *coordinates]},
        replace_extra_special_tokens=False,
    )
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<image>"),
        "location_token_start_id": ids(locations[0]),
        "class_token_start_id": ids(classes[0]),
        "no_object_token_id": ids("<c-none>"),
        "cls_query_token_id": ids("<cls>"),
        "coordinate_query_start_id": ids(coordinates[0]),
    }


def tiny_v1_config(token_ids: dict[str, int], vocab_size: int, num_image_tokens: int = 100, image_size: int = 64,
                   num_location_bins: int = 1025, num_classes: int = 512) -> VisionLLMv1Config:
    """ResNet (widths 8-64) + Deformable DETR (d_model 32, 1+2 layers, M queries) + BERT and Llama at width 32."""
    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    detector = DeformableDetrConfig(
        backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False, d_model=32,
        encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=num_image_tokens, num_feature_levels=4,
        encoder_n_points=2, decoder_n_points=2, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )
    prompt_encoder = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return VisionLLMv1Config(
        text_config=tiny_text_config(vocab_size), prompt_encoder_config=prompt_encoder, detector_config=detector,
        num_location_bins=num_location_bins, num_classes=num_classes, image_size=image_size, **token_ids,
    )


def build_v1_processor(config: VisionLLMv1Config, tokenizer) -> VisionLLMv1Processor:
    image_processor = ViTImageProcessor(
        size={"height": config.image_size, "width": config.image_size}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
    )
    return VisionLLMv1Processor(
        image_processor, tokenizer, num_image_tokens=config.num_image_tokens, location_range=config.location_range
    )


def build_tiny_v1(seed: int = 0, **config_fields) -> tuple[VisionLLMv1ForConditionalGeneration, VisionLLMv1Processor]:
    """A random tiny VisionLLM v1 with an offline tokenizer."""
    from .checkpoint import set_generation_tokens
    from .tokenizer import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    token_ids = add_v1_tokens(
        tokenizer, config_fields.get("num_location_bins", 1025), config_fields.get("num_classes", 512)
    )
    config = tiny_v1_config(token_ids, vocab_size=len(tokenizer), **config_fields)
    torch.manual_seed(seed)
    model = VisionLLMv1ForConditionalGeneration(config)
    model.config.training_history = ["random-init"]  # `visionllm-hf train` continues from it
    set_generation_tokens(model, tokenizer)
    return model, build_v1_processor(config, tokenizer)


__all__ = ["add_v1_tokens", "build_tiny_v1", "build_v1_processor", "tiny_v1_config"]
