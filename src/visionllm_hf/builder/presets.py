"""Named model sizes: `tiny` (random, seconds on CPU) and `visionllm-v2` (the paper's CLIP-L/336 + Vicuna-7B)."""

from transformers import (
    BertConfig,
    CLIPVisionConfig,
    GroundingDinoConfig,
    LlamaConfig,
    PreTrainedConfig,
    Sam2VideoConfig,
    SamConfig,
    SamMaskDecoderConfig,
    SamPromptEncoderConfig,
    SamVisionConfig,
    SwinConfig,
)

from ..modeling.configuration_visionllm import VisionLLMConfig
from ..processing.special_tokens import SPECIAL_TOKENS
from .vision import feature_select_strategy, probe_vision_features


def make_config(vision_config: PreTrainedConfig, text_config: PreTrainedConfig, **fields) -> VisionLLMConfig:
    """A `VisionLLMConfig` for any tower and LLM; derives what the tower's config does not state."""
    fields.setdefault("vision_feature_select_strategy", feature_select_strategy(vision_config))
    if not hasattr(vision_config, "hidden_size") or not hasattr(vision_config, "patch_size"):
        probed = probe_vision_features(vision_config, fields.get("vision_feature_layer", -2), fields.get("tile_size"))
        for field, value in probed.items():
            fields.setdefault(field, value)
    return VisionLLMConfig(vision_config=vision_config, text_config=text_config, **fields)


def tiny_text_config(vocab_size: int, **overrides) -> LlamaConfig:
    defaults = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    return LlamaConfig(**{**defaults, **overrides})


def tiny_vision_config(**overrides) -> CLIPVisionConfig:
    defaults = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    return CLIPVisionConfig(**{**defaults, **overrides})


def tiny_sam_config(image_size: int = 64, width: int = 32) -> SamConfig:
    """SAM with a 2-layer ViT (hidden 32) on 64 px images: 8x8 image embeddings, 32x32 masks."""
    patch = image_size // 8
    return SamConfig(
        vision_config=SamVisionConfig(
            hidden_size=width, output_channels=width, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch, mlp_dim=2 * width, window_size=4, global_attn_indexes=[1],
            num_pos_feats=width // 2,
        ),
        prompt_encoder_config=SamPromptEncoderConfig(
            # SAM's own 16: mask_embed's first conv gets 16 // 4 channels, and a LayerNorm over a single channel
            # (4 // 4) would erase the visual prompt
            hidden_size=width, image_size=image_size, patch_size=patch, mask_input_channels=16
        ),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=width, mlp_dim=2 * width, num_attention_heads=2, iou_head_hidden_dim=width
        ),
    )


def tiny_detector_config(width: int = 32) -> GroundingDinoConfig:
    """Grounding DINO with a tiny Swin backbone, one encoder and two decoder layers, 20 queries."""
    return GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=2, image_size=64,
            out_indices=[2, 3, 4],
        ),
        # Never run: the LLM's category features replace the text encoder. Kept tiny so building it is cheap.
        text_config=BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16),
        d_model=width, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=2 * width, decoder_ffn_dim=2 * width,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, num_feature_levels=3,
        encoder_n_points=2, decoder_n_points=2, fusion_droppath=0.0,
    )


def diffusion_decoder_config(
    unet: dict, vae: dict, scheduler: dict, image_size: int, mapper: dict | None = None, condition_dropout: float = 0.05
) -> dict:
    """
    A `generation_decoder_config` / `editing_decoder_config`: diffusers config dicts plus the Q-Former mapper
    (77 queries). The default mapper is ours (the paper calls it "small"): 2 layers at the UNet's cross-attention
    width, reading super-link states projected to that width.
    """
    width = unet["cross_attention_dim"]
    heads = max(1, width // 64)
    mapper = mapper or {
        "hidden_size": width, "num_hidden_layers": 2, "num_attention_heads": heads, "intermediate_size": 4 * width,
        "encoder_hidden_size": width,
    }
    return {
        "unet": dict(unet), "vae": dict(vae), "scheduler": dict(scheduler), "mapper": dict(mapper),
        "image_size": image_size, "num_prompt_tokens": 77, "condition_dropout": condition_dropout,
    }


def tiny_diffusion_config(editing: bool = False, image_size: int = 32) -> dict:
    """A UNet (16/32 channels, cross-attention width 32) and a VAE (one downsampling) for 32 px images."""
    unet = {
        "sample_size": image_size // 2, "in_channels": 8 if editing else 4, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32, "attention_head_dim": 8,
        "norm_num_groups": 32,
    }
    vae = {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [16, 32],
        "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
        "norm_num_groups": 8, "sample_size": image_size, "scaling_factor": 1.0,  # unit-scale latents when this small
    }
    scheduler = {  # Stable Diffusion's noise schedule, sampled with DDIM; v-prediction as SD 2 (learns faster)
        "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "num_train_timesteps": 1000,
        "prediction_type": "v_prediction",
    }
    mapper = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "encoder_hidden_size": 32}
    return diffusion_decoder_config(unet, vae, scheduler, image_size, mapper=mapper)


def tiny_config(
    token_ids: dict[str, int], vocab_size: int, decoders: bool = True, generation: bool = False,
    video_masks: bool = False,
) -> VisionLLMConfig:
    """
    CLIP vision (hidden 32, 2 layers, 32 px tiles of 16 tokens) + Llama (hidden 32, 2 layers); with `decoders`,
    a tiny Grounding DINO behind `[DET]` (and with keypoint queries behind `[POSE]`), a tiny SAM behind `[SEG]`
    and the box decoder behind `<LOC>`; with `generation`, tiny diffusers decoders behind `[GEN]` and `[EDIT]`;
    with `video_masks`, a tiny SAM 2 video model that tracks a `[SEG]` mask through a video.
    """
    decoder_fields = {
        "routing_decoders": {"det": "object", "seg": "mask", "pose": "keypoint", "loc": "box"},
        "mask_decoder_config": tiny_sam_config(),
        "object_decoder_config": tiny_detector_config(),
    }
    if generation:
        decoder_fields["routing_decoders"].update(gen="text_to_image", edit="image_editing")
        decoder_fields["generation_decoder_config"] = tiny_diffusion_config(editing=False)
        decoder_fields["editing_decoder_config"] = tiny_diffusion_config(editing=True)
    if video_masks:
        decoder_fields["video_mask_decoder_config"] = tiny_sam2_video_config(image_size=64)
    return make_config(
        tiny_vision_config(),
        tiny_text_config(vocab_size),
        vision_feature_layer=-1,
        region_conv_channels=[8, 16],
        **(decoder_fields if decoders else {}),
        **token_ids,
    )


def demo_vision_config() -> CLIPVisionConfig:
    """The demo's CLIP tower: hidden 96, 3 layers, 128 px tiles of 64 tokens."""
    return tiny_vision_config(hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
                              image_size=128, patch_size=16)


def demo_text_config(vocab_size: int) -> LlamaConfig:
    """The demo's Llama: hidden 128, 3 layers."""
    return tiny_text_config(vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=3)


def demo_fields(keypoint_names: list[str]) -> dict:
    """
    Everything of the demo's config but its tower and LLM: one tile per image, all four decoders at width 64,
    and the projector's output normalised (see `VisionLLMConfig.projector_norm`).
    """
    detector = tiny_detector_config(width=64)
    detector.backbone_config.image_size = 128
    detector.num_queries = 30
    return dict(
        vision_feature_layer=-2, max_tiles=1, use_global_view=False, region_conv_channels=[16, 32],
        projector_norm=True, routing_decoders={"det": "object", "seg": "mask", "pose": "keypoint", "loc": "box"},
        mask_decoder_config=tiny_sam_config(image_size=128, width=64), object_decoder_config=detector,
        keypoint_names=list(keypoint_names),
    )


def demo_config(token_ids: dict[str, int], vocab_size: int, keypoint_names: list[str]) -> VisionLLMConfig:
    """
    The shipped demo model's size (about 3 M parameters, under 20 MB): `demo_vision_config`, `demo_text_config`
    and `demo_fields`.
    """
    return make_config(demo_vision_config(), demo_text_config(vocab_size), **demo_fields(keypoint_names), **token_ids)


def assembly_fields(preset: str) -> dict:
    """What `build --preset P --vision DIR --llm DIR` adds to the pretrained tower and LLM."""
    if preset == "demo":
        from ..synthetic import KEYPOINTS

        return demo_fields(list(KEYPOINTS))
    if preset == "visionllm-v2":
        return {"max_tiles": 4}
    raise ValueError(f"--preset {preset} has no assembly from pretrained parts; use demo or visionllm-v2")


VICUNA_7B_VOCAB = 32000


def visionllm_v2_config(token_ids: dict[str, int] | None = None, vocab_size: int | None = None) -> VisionLLMConfig:
    """
    CLIP ViT-L/14 at 336 px + Vicuna-7B v1.5 sizes, max 4 tiles plus a global view (paper 002, table A12).
    Without `token_ids`, our special tokens (and a pad token) take the ids after Vicuna's 32000.
    """
    if token_ids is None:
        token_ids = {field: VICUNA_7B_VOCAB + index for index, field in enumerate(SPECIAL_TOKENS)}
        vocab_size = VICUNA_7B_VOCAB + len(SPECIAL_TOKENS) + 1
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    text = LlamaConfig(
        vocab_size=vocab_size or VICUNA_7B_VOCAB,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )
    return make_config(vision, text, max_tiles=4, **token_ids)


def tiny_sam2_video_config(image_size: int = 64) -> Sam2VideoConfig:
    """
    A `Sam2VideoConfig` small enough for CPU tests (about 0.62M parameters at `image_size=64`).

    The memory path fixes some sizes: the memory attention reads 64-channel memories (hard-coded), and the object
    pointers are only split into memory tokens when the model's hidden size is larger than that, so the hidden
    size is 128. Each Hiera stage has one block and a different width (a stage that keeps its width would not pool
    its residual), and no block has global attention (a global block that pools divides by a zero window).

    Args:
        image_size (`int`, *optional*, defaults to 64):
            Side of the square model input, a multiple of 32.
    """
    if image_size % 32:
        raise ValueError(f"`image_size` must be a multiple of 32, got {image_size}")
    side = [image_size // 4, image_size // 8, image_size // 16]  # the feature maps SAM2 reads: strides 4, 8, 16
    backbone = dict(
        model_type="sam2_hiera_det_model", hidden_size=8, image_size=[image_size, image_size],
        blocks_per_stage=[1, 1, 1, 1], embed_dim_per_stage=[8, 12, 16, 24],
        num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 2],
        window_positional_embedding_background_size=[4, 4], global_attention_blocks=[],
    )  # fmt: skip
    vision = dict(
        model_type="sam2_vision_model", backbone_config=backbone, backbone_channel_list=[24, 16, 12, 8],
        backbone_feature_sizes=[[s, s] for s in side], fpn_hidden_size=128,
    )  # fmt: skip
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=128, image_size=image_size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=128, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2, num_multimask_outputs=1,
            iou_head_depth=1, iou_head_hidden_dim=16,
        ),
        image_size=image_size, num_maskmem=3, max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=128, memory_attention_num_layers=1, memory_attention_downsample_rate=2,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[side[2], side[2]],
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        mask_downsampler_kernel_size=2, mask_downsampler_padding=0,
        memory_fuser_num_layers=1, memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64,
    )  # fmt: skip


__all__ = [
    "assembly_fields",
    "demo_config",
    "demo_fields",
    "demo_text_config",
    "demo_vision_config",
    "diffusion_decoder_config",
    "make_config",
    "tiny_config",
    "tiny_detector_config",
    "tiny_diffusion_config",
    "tiny_sam2_video_config",
    "tiny_sam_config",
    "tiny_text_config",
    "tiny_vision_config",
    "visionllm_v2_config",
]
