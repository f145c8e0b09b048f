"""VisionLLM configuration.

This file ships with every checkpoint (``trust_remote_code``), so it imports only
from the Python standard library and transformers, never from ``visionllm_hf``.
"""

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec


DEFAULT_SUPER_LINK_QUERIES = {"det": 4, "seg": 4, "pose": 4, "loc": 0, "gen": 64, "edit": 64}
DEFAULT_DECODER_LOSS_WEIGHTS = {
    "box_l1": 1.0,  # u-LLaVA
    "box_giou": 1.0,
    "mask_bce": 2.0,
    "mask_dice": 0.5,
    "det_class": 1.0,  # Grounding DINO's focal, L1 and GIoU coefficients; mask terms as in Mask DINO
    "det_l1": 5.0,
    "det_giou": 2.0,
    "det_aux_class": 1.0,  # the same, for earlier decoder layers and encoder proposals (summed over them)
    "det_aux_l1": 5.0,
    "det_aux_giou": 2.0,
    "det_category": 1.0,  # keeps the encoded category features of different names apart
    "det_mask_bce": 1.0,
    "det_mask_dice": 1.0,
    "pose_l1": 10.0,  # UniPose's keypoint L1 weight
    "pose_visibility": 1.0,
    "gen_noise_mse": 1.0,  # VisionLLM v2's generation losses: noise MSE + 0.1 x MSE to SD's text features
    "gen_text_mse": 0.1,
    "edit_noise_mse": 1.0,
    "edit_text_mse": 0.1,
}
DECODER_TYPES = ("box", "mask", "object", "keypoint", "text_to_image", "image_editing")
VIDEO_TEMPORAL_TOKENS = ("frame_means", "frame_changes")  # see the docstring
DIFFUSION_CONFIG_FIELDS = {"text_to_image": "generation_decoder_config", "image_editing": "editing_decoder_config"}
COCO_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
]


@strict
class VisionLLMConfig(PreTrainedConfig):
    r"""
    Configuration of a VisionLLM model: a vision tower, a projector and a causal language model.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*, defaults to a CLIP ViT-L/14-336 config):
            Config of the image encoder. Any transformers vision tower works (CLIP, SigLIP, ...), and any timm
            model through `TimmWrapperConfig`.
        text_config (`dict` or `PreTrainedConfig`, *optional*, defaults to a Llama config):
            Config of the causal language model (Llama, Qwen2, ...).
        vision_feature_layer (`int`, *optional*, defaults to -2):
            Index into the vision tower's `hidden_states` of the layer that feeds the LLM.
        vision_feature_select_strategy (`str`, *optional*, defaults to `"default"`):
            `"default"` drops the first token of a token-sequence feature (the CLS token of CLIP-like towers);
            `"full"` keeps every token (SigLIP). Feature maps of shape (batch, channels, height, width), as timm
            towers return, are flattened and keep every position.
        vision_feature_dim (`int`, *optional*):
            Channel width of the selected vision feature. Derived from `vision_config.hidden_size` when left unset;
            must be given for towers without a `hidden_size` (timm).
        image_seq_length (`int`, *optional*):
            Number of LLM tokens one tile produces. Derived from `vision_config.image_size` and `patch_size` when
            left unset; must be given for towers without them (timm).
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation between the two linear layers of the projector.
        multimodal_projector_bias (`bool`, *optional*, defaults to `True`):
            Whether the projector's linear layers have a bias.
        projector_norm (`bool`, *optional*, defaults to `False`):
            Whether the projector (and the VisionLLM v2 region encoder's) ends with a LayerNorm. Its gain starts at the text embeddings' scale (the builder
            sets it), so image tokens enter the LLM as large as words do; without it, a projector trained from
            random weights at a high learning rate grew its tokens to hundreds of times the text embeddings' norm
            and collapsed them onto one shared direction the LLM then ignored.
        tile_size (`int`, *optional*):
            Side of a square tile in pixels. Defaults to `vision_config.image_size`.
        min_tiles (`int`, *optional*, defaults to 1):
            Fewest local tiles an image is cut into.
        max_tiles (`int`, *optional*, defaults to 4):
            Most local tiles an image is cut into (VisionLLM v2's "max tile").
        tile_grids (`list[list[int]]`, *optional*):
            The aspect-ratio set as `[columns, rows]` grids. Defaults to every grid with
            `min_tiles <= columns * rows <= max_tiles`.
        use_global_view (`bool`, *optional*, defaults to `True`):
            Whether a whole-image view resized to one tile follows the local tiles.
        region_encoder_type (`str`, *optional*, defaults to `"visionllm_v2"`):
            How `<region>` embeddings are made: `"visionllm_v2"` (mask + image convolutions added to the global
            view's features, grid-sampled inside the mask, own projection), `"regiongpt"` (4x deconvolution
            refinement, mask pooling, projector shared with the image; image tokens also come from the refined
            map), or `None` for a model without visual prompts.
        region_conv_channels (`list[int]`, *optional*, defaults to `[64, 256]`):
            Widths of the first two convolutions of the `visionllm_v2` region encoder.
        region_sampling_factor (`int`, *optional*, defaults to 4):
            The `visionllm_v2` encoder grid-samples features at this multiple of the feature grid resolution.
        routing_decoders (`dict[str, str]`, *optional*):
            Which decoder each routing token drives, keyed by routing name: `"det"` (`[DET]`), `"seg"` (`[SEG]`),
            `"pose"` (`[POSE]`), `"loc"` (`<LOC>`), `"gen"` (`[GEN]`), `"edit"` (`[EDIT]`). Decoders: `"box"`
            (u-LLaVA MLP box decoder), `"mask"` (SAM mask decoder), `"object"` (Grounding DINO with a mask head),
            `"keypoint"` (the object decoder plus keypoint-name queries, UniPose-style), `"text_to_image"`
            (Stable Diffusion) and `"image_editing"` (InstructPix2Pix), both through diffusers. Unset or empty:
            a plain chat model without decoders.
        super_link_queries (`dict[str, int]`, *optional*):
            Learnable super-link queries per routing name (VisionLLM v2: 4 for perception, 64 for generation);
            0 uses the routing token's own hidden state (LISA / u-LLaVA). Defaults to 4 for `det`, `seg`, `pose`,
            0 for `loc`, 64 for `gen` and `edit`.
        video_mask_decoder_config (`dict` or `Sam2VideoConfig`, *optional*):
            A SAM 2 video model that turns the mask a `[SEG]` gives on a video's first frame into a masklet (one
            mask per frame, see `video_masklets.py`); unset: `[SEG]` about a video gives the first frame's mask only.
        mask_decoder_config (`dict` or `SamConfig`, *optional*):
            Config of the SAM model behind the `"mask"` decoder.
        object_decoder_config (`dict` or `GroundingDinoConfig`, *optional*):
            Config of the Grounding DINO behind the `"object"` decoder; its BERT text encoder is replaced by
            category features from the LLM.
        generation_decoder_config (`dict`, *optional*):
            The `"text_to_image"` decoder: diffusers configs `unet`, `vae`, `scheduler` (with `_class_name`), the
            Q-Former `mapper` (`Blip2QFormerConfig` keyword arguments), `image_size`, `num_prompt_tokens` (77) and
            `condition_dropout` (rate of dropping the condition in training, for classifier-free guidance).
        editing_decoder_config (`dict`, *optional*):
            The same for the `"image_editing"` decoder, whose UNet reads 8 channels (InstructPix2Pix).
        keypoint_names (`list[str]`, *optional*, defaults to the 17 COCO keypoints):
            The keypoints the `"keypoint"` decoder predicts per instance, in order.
        decoder_image_size (`int`, *optional*):
            Side of the square image the decoders read (`decoder_pixel_values`). Defaults to the SAM input size
            when a mask decoder is configured.
        decoder_loss_weights (`dict[str, float]`, *optional*):
            Weight of each decoder loss component added to the LM loss. Defaults to u-LLaVA's: `box_l1` 1.0,
            `box_giou` 1.0, `mask_bce` 2.0, `mask_dice` 0.5; Grounding DINO's for the object decoder: `det_class`
            1.0, `det_l1` 5.0, `det_giou` 2.0 (and the same for the `det_aux_*` terms of earlier decoder layers and
            encoder proposals), and 1.0 for `det_mask_bce` and `det_mask_dice`; UniPose's
            `pose_l1` 10.0 and `pose_visibility` 1.0; VisionLLM v2's `gen_noise_mse` / `edit_noise_mse` 1.0 and
            `gen_text_mse` / `edit_text_mse` 0.1.
        image_token_id, region_token_id, det_token_id, seg_token_id, pose_token_id, gen_token_id, edit_token_id, loc_token_id (`int`, *optional*):
            Vocabulary ids of the special tokens `<image>`, `<region>`, `[DET]`, `[SEG]`, `[POSE]`, `[GEN]`,
            `[EDIT]` and `<LOC>`. Each is exactly one token id.
        query_token_id (`int`, *optional*):
            Id of `<query>`, the placeholder each super-link query takes in the sequence.
        video_token_id, video_start_token_id, video_end_token_id (`int`, *optional*):
            Ids of `<video>` (the placeholder a video's `image_seq_length + frames` tokens fill) and of u-LLaVA's
            markers `<vid_beg>` and `</vid_end>` around them. Unset for a checkpoint without video support.
        video_temporal_tokens (`str`, *optional*, defaults to `"frame_means"`):
            What a video's T temporal tokens carry. `"frame_means"`: each frame's features averaged over its patches
            (u-LLaVA). `"frame_changes"`: how that average changed since the previous frame (zero for the first
            frame), standardised per token so a small change is as loud as a frame; the same T tokens, no new
            parameters, and a bag of them says which way things move whatever their order. The tiny models here
            learn direction from the changes but not from the means (README, "Videos").
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Whether the LM head shares its weight with the input embeddings.
        training_history (`list[str]`, *optional*):
            How the weights came to be, in order: `"random-init"` (a preset build) or `"pretrained-parts"`
            (assembled from pretrained checkpoints), then every `visionllm-hf train` stage run on them.
            `visionllm-hf train` picks the stage to continue with from it.

    Example:

    ```python
    >>> from transformers import CLIPVisionConfig, LlamaConfig
    >>> from visionllm_hf import VisionLLMConfig, VisionLLMForConditionalGeneration
    >>> config = VisionLLMConfig(
    ...     vision_config=CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    ...                                    intermediate_size=64, image_size=28, patch_size=14),
    ...     text_config=LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    ...                             intermediate_size=64, vocab_size=300),
    ...     image_token_id=299,
    ... )
    >>> model = VisionLLMForConditionalGeneration(config)
    ```
    """

    model_type = "visionllm"

    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs={
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "image_size": 336,
                "patch_size": 14,
                "projection_dim": 768,
            },
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "mask_decoder_config": SubConfigSpec(config_class=AutoConfig, model_type="sam", optional=True),
        "object_decoder_config": SubConfigSpec(config_class=AutoConfig, model_type="grounding-dino", optional=True),
        "video_mask_decoder_config": SubConfigSpec(config_class=AutoConfig, model_type="sam2_video", optional=True),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    mask_decoder_config: dict | PreTrainedConfig | None = None
    object_decoder_config: dict | PreTrainedConfig | None = None
    video_mask_decoder_config: dict | PreTrainedConfig | None = None
    generation_decoder_config: dict | None = None
    editing_decoder_config: dict | None = None
    vision_feature_layer: int = -2
    vision_feature_select_strategy: Literal["default", "full"] = "default"
    vision_feature_dim: int | None = None
    image_seq_length: int | None = None
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    projector_norm: bool = False
    tile_size: int | None = None
    min_tiles: int = 1
    max_tiles: int = 4
    tile_grids: list[list[int]] | None = None
    use_global_view: bool = True
    region_encoder_type: Literal["visionllm_v2", "regiongpt"] | None = "visionllm_v2"
    region_conv_channels: list[int] | None = None
    region_sampling_factor: int = 4
    routing_decoders: dict[str, str] | None = None
    super_link_queries: dict[str, int] | None = None
    decoder_image_size: int | None = None
    decoder_loss_weights: dict[str, float] | None = None
    keypoint_names: list[str] | None = None
    image_token_id: int | None = None
    region_token_id: int | None = None
    det_token_id: int | None = None
    seg_token_id: int | None = None
    pose_token_id: int | None = None
    gen_token_id: int | None = None
    edit_token_id: int | None = None
    loc_token_id: int | None = None
    query_token_id: int | None = None
    video_token_id: int | None = None
    video_start_token_id: int | None = None
    video_end_token_id: int | None = None
    video_temporal_tokens: Literal["frame_means", "frame_changes"] = "frame_means"
    tie_word_embeddings: bool = False
    training_history: list[str] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        vision = self.vision_config
        has_vit_geometry = hasattr(vision, "image_size") and hasattr(vision, "patch_size")
        if self.vision_feature_dim is None:
            if not hasattr(vision, "hidden_size"):
                raise ValueError(
                    f"vision_config of type '{vision.model_type}' has no hidden_size: set vision_feature_dim"
                )
            self.vision_feature_dim = vision.hidden_size
        if self.tile_size is None:
            if not has_vit_geometry:
                raise ValueError(f"vision_config of type '{vision.model_type}' has no image_size: set tile_size")
            self.tile_size = vision.image_size
        if self.image_seq_length is None:
            if not has_vit_geometry:
                raise ValueError(
                    f"vision_config of type '{vision.model_type}' has no patch_size: set image_seq_length"
                )
            self.image_seq_length = (self.tile_size // vision.patch_size) ** 2
        if self.region_conv_channels is None:
            self.region_conv_channels = [64, 256]
        if self.region_encoder_type is not None and self.feature_grid_size ** 2 != self.image_seq_length:
            raise ValueError(
                f"region encoders need a square grid of features per tile, but image_seq_length is "
                f"{self.image_seq_length}; set region_encoder_type=None"
            )
        self._set_super_link_defaults()
        if self.video_temporal_tokens not in VIDEO_TEMPORAL_TOKENS:
            raise ValueError(
                f"unknown video_temporal_tokens '{self.video_temporal_tokens}'; known: {', '.join(VIDEO_TEMPORAL_TOKENS)}"
            )
        if not 1 <= self.min_tiles <= self.max_tiles:
            raise ValueError(f"need 1 <= min_tiles <= max_tiles, got {self.min_tiles} and {self.max_tiles}")
        # The text model's own flag decides tying when it was saved that way (same rule as LLaVA).
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True


    def _set_super_link_defaults(self):
        self.routing_decoders = dict(self.routing_decoders or {})
        self.super_link_queries = {**DEFAULT_SUPER_LINK_QUERIES, **(self.super_link_queries or {})}
        self.decoder_loss_weights = {**DEFAULT_DECODER_LOSS_WEIGHTS, **(self.decoder_loss_weights or {})}
        for name, decoder in self.routing_decoders.items():
            if name not in DEFAULT_SUPER_LINK_QUERIES:
                raise ValueError(f"unknown routing name '{name}'; known: {sorted(DEFAULT_SUPER_LINK_QUERIES)}")
            if decoder not in DECODER_TYPES:
                raise ValueError(f"unknown decoder '{decoder}' for routing '{name}'; known: {DECODER_TYPES}")
        if "mask" in self.routing_decoders.values():
            if self.mask_decoder_config is None:
                raise ValueError("a 'mask' decoder needs mask_decoder_config (a SamConfig)")
            if self.decoder_image_size is None:
                self.decoder_image_size = self.mask_decoder_config.vision_config.image_size
        if self.keypoint_names is None:
            self.keypoint_names = list(COCO_KEYPOINTS)
        detectors = {"object", "keypoint"} & set(self.routing_decoders.values())
        if detectors and self.object_decoder_config is None:
            raise ValueError(f"the {sorted(detectors)} decoder needs object_decoder_config (a GroundingDinoConfig)")
        for decoder, field in DIFFUSION_CONFIG_FIELDS.items():
            if decoder in self.routing_decoders.values() and getattr(self, field) is None:
                raise ValueError(f"the '{decoder}' decoder needs {field} (unet, vae, scheduler, mapper, image_size)")
        if self.routing_decoders and self.decoder_image_size is None:
            self.decoder_image_size = self.tile_size

    def max_text_positions(self) -> int | None:
        """The positions the language model was built for (`max_position_embeddings`), if its config says."""
        return getattr(self.text_config, "max_position_embeddings", None)  # not every LM config declares it

    def placeholder_token_ids(self) -> list[int]:
        """
        Ids of `<image>`, `<video>` (and its markers `<vid_beg>`, `</vid_end>`), `<region>` and `<query>`: what
        the processor and the super link put in the sequence, never sampled.
        """
        names = ("image", "video", "video_start", "video_end", "region", "query")
        return [token_id for name in names if (token_id := getattr(self, f"{name}_token_id")) is not None]

    def special_token_ids(self) -> list[int]:
        """
        Ids of the set special tokens whose positions the model locates: `<image>`, `<video>`, `<region>`,
        `<query>`, routing.
        """
        names = ("image", "video", "region", "query", *DEFAULT_SUPER_LINK_QUERIES)
        return [token_id for name in names if (token_id := getattr(self, f"{name}_token_id")) is not None]

    @property
    def feature_grid_size(self) -> int:
        """Side of the square grid of vision features one tile gives (24 for CLIP-L/14 at 336 px)."""
        return math.isqrt(self.image_seq_length)


__all__ = ["VisionLLMConfig"]
