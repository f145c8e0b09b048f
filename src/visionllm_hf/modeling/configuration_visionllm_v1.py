"""VisionLLM (v1) configuration: language-guided image tokenizer + LLM with location, class and format tokens.

This file ships with every v1 checkpoint (``trust_remote_code``): it imports only the standard library and
transformers.
"""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

MAX_BOUNDARY_POINTS = 24


@strict
class VisionLLMv1Config(PreTrainedConfig):
    r"""
    Configuration of a VisionLLM (v1) model (paper 000).

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*, defaults to a Llama config):
            The LLM decoder (Alpaca / LLaMA in the paper).
        prompt_encoder_config (`dict` or `PreTrainedConfig`, *optional*, defaults to a BERT config):
            The text encoder whose prompt features are injected into every image scale. It reads the LLM
            tokenizer's ids, so its `vocab_size` must cover that tokenizer.
        detector_config (`dict` or `PreTrainedConfig`, *optional*, defaults to a Deformable DETR config):
            `DeformableDetrConfig` of the image tokenizer; its `backbone_config` (ResNet, or Swin where available)
            gives the scales through `AutoBackbone`, its `num_queries` is M, the number of image tokens.
        num_location_bins (`int`, *optional*, defaults to 1025):
            Location tokens `<p-R>` .. `<pR>` with `R = (num_location_bins - 1) / 2`; `<pi>` means an offset of
            `i / R` of the image width or height from the owning image token's location (the paper ablates
            257, 513, 1025 and 2049).
        num_classes (`int`, *optional*, defaults to 512):
            Class tokens `<c0>` .. `<cK-1>`; the instruction's `<class>` set maps category names to them.
        image_size (`int`, *optional*, defaults to 512):
            Side of the square image the tokenizer reads.
        location_token_start_id, class_token_start_id, no_object_token_id, image_token_id, cls_query_token_id, coordinate_query_start_id (`int`, *optional*):
            Vocabulary ids: the first location token (`<p-R>`; the others follow in order), the first class token
            (`<c0>`), the no-object class `<c-none>`, `<image>`, the format query `<cls>`, and the first coordinate
            query (`<x1>`; then `<y1>`, `<x2>`, `<y2>`, ... up to `<y24>`).
        tokenizer_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the image tokenizer's loss (class-agnostic focal + L1 on centres) in the total loss.
        training_history (`list[str]`, *optional*):
            How the weights came to be, in order: `"random-init"` (a preset build) or `"pretrained-parts"`
            (assembled from pretrained checkpoints), then every `visionllm-hf train` stage run on them.
            `visionllm-hf train` picks the stage to continue with from it.
    """

    model_type = "visionllm_v1"

    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "prompt_encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
        "detector_config": SubConfigSpec(config_class=AutoConfig, model_type="deformable_detr"),
    }

    text_config: dict | PreTrainedConfig | None = None
    prompt_encoder_config: dict | PreTrainedConfig | None = None
    detector_config: dict | PreTrainedConfig | None = None
    num_location_bins: int = 1025
    num_classes: int = 512
    image_size: int = 512
    location_token_start_id: int | None = None
    class_token_start_id: int | None = None
    no_object_token_id: int | None = None
    image_token_id: int | None = None
    cls_query_token_id: int | None = None
    coordinate_query_start_id: int | None = None
    tokenizer_loss_weight: float = 1.0
    tie_word_embeddings: bool = False
    training_history: list[str] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.num_location_bins < 3 or self.num_location_bins % 2 == 0:
            raise ValueError(f"num_location_bins must be odd and >= 3 (<p-R> .. <pR>), got {self.num_location_bins}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")

    @property
    def location_range(self) -> int:
        """R: location tokens run from `<p-R>` to `<pR>`."""
        return (self.num_location_bins - 1) // 2

    @property
    def num_image_tokens(self) -> int:
        """M: image tokens per image (the tokenizer's queries)."""
        return self.detector_config.num_queries


__all__ = ["MAX_BOUNDARY_POINTS", "VisionLLMv1Config"]
