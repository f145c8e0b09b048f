"""Assemble a VisionLLM checkpoint from pretrained parts (hub ids or local folders)."""

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

from ..modeling.modeling_visionllm import VisionLLMForConditionalGeneration
from ..processing.image_processing_visionllm import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..processing.processing_visionllm import VisionLLMProcessor
from .checkpoint import build_processor, match_projector_norm_to_text, set_generation_tokens
from .presets import make_config
from .tokenizer import add_special_tokens


def assemble_from_pretrained(
    vision: str, llm: str, tokenizer: str | None = None, **config_fields
) -> tuple[VisionLLMForConditionalGeneration, VisionLLMProcessor]:
    """
    Load a vision tower and a causal LM with their weights, add VisionLLM's special tokens to the tokenizer
    (one id each; new embedding rows set to the mean of the old ones), and return the model and its processor.
    The projector is freshly initialised.

    Args:
        vision (`str`): hub id or folder of a vision model; a dual encoder (CLIP, SigLIP) gives its vision half.
        llm (`str`): hub id or folder of a causal LM.
        tokenizer (`str`, *optional*): hub id or folder of the tokenizer; defaults to `llm`.
        **config_fields: extra `VisionLLMConfig` fields (`max_tiles`, `vision_feature_layer`, ...).
    """
    tokenizer = AutoTokenizer.from_pretrained(tokenizer or llm)
    token_ids = add_special_tokens(tokenizer)

    vision_source = AutoModel.from_pretrained(vision)
    vision_config = getattr(vision_source.config, "vision_config", vision_source.config)
    language_source = AutoModelForCausalLM.from_pretrained(llm)
    config = make_config(vision_config, language_source.config, **token_ids, **config_fields)
    model = VisionLLMForConditionalGeneration(config)
    model.config.training_history = ["pretrained-parts"]  # `visionllm-hf train` continues from it

    is_dual_encoder = vision_config is not vision_source.config  # CLIP/SigLIP with a text half: keep the vision half
    vision_weights = (vision_source.vision_model if is_dual_encoder else vision_source).state_dict()
    model.model.vision_tower.load_state_dict(vision_weights)
    model.model.language_model.load_state_dict(language_source.base_model.state_dict())
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(language_source.get_output_embeddings().state_dict())
    resize_embeddings_to_mean(model, len(tokenizer))
    match_projector_norm_to_text(model)
    set_generation_tokens(model, tokenizer)

    image_mean, image_std = _normalisation(vision)
    return model, build_processor(config, tokenizer, image_mean=image_mean, image_std=image_std)


@torch.no_grad()
def resize_embeddings_to_mean(model: VisionLLMForConditionalGeneration, vocab_size: int):
    """Grow the vocabulary to `vocab_size`; every new input and output row equals the mean of the old rows."""
    old_size = model.get_input_embeddings().weight.shape[0]
    if vocab_size <= old_size:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    matrices = {model.get_input_embeddings().weight, model.get_output_embeddings().weight}
    for weight in matrices:
        weight[old_size:] = weight[:old_size].mean(dim=0)


def _normalisation(vision: str) -> tuple[list[float], list[float]]:
    """The vision model's own image mean and std when it ships an image processor, CLIP's otherwise."""
    try:
        image_processor = AutoImageProcessor.from_pretrained(vision)
    except (OSError, ValueError):
        return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
    return list(image_processor.image_mean), list(image_processor.image_std)


__all__ = ["assemble_from_pretrained", "resize_embeddings_to_mean"]
