"""Assemble a model and processor from a config and a tokenizer, save them, and count parameters."""

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase
from transformers.dynamic_module_utils import custom_object_save

from ..modeling.configuration_visionllm import VisionLLMConfig
from ..modeling.modeling_visionllm import VisionLLMForConditionalGeneration
from ..processing.chat_template import CHAT_TEMPLATE
from ..processing.image_processing_visionllm import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, VisionLLMImageProcessor
from ..processing.processing_visionllm import VisionLLMProcessor
from ..processing.special_tokens import ROUTING_TOKENS


def build_processor(
    config: VisionLLMConfig,
    tokenizer: PreTrainedTokenizerBase,
    image_mean: list[float] = OPENAI_CLIP_MEAN,
    image_std: list[float] = OPENAI_CLIP_STD,
) -> VisionLLMProcessor:
    """The processor whose tiling and token counts agree with `config`."""
    image_processor = VisionLLMImageProcessor(
        tile_size=config.tile_size,
        min_tiles=config.min_tiles,
        max_tiles=config.max_tiles,
        tile_grids=config.tile_grids,
        use_global_view=config.use_global_view,
        image_seq_length=config.image_seq_length,
        image_mean=list(image_mean),
        image_std=list(image_std),
        decoder_image_size=config.decoder_image_size,
    )
    if config.max_text_positions() is not None:  # the processor warns about longer inputs
        tokenizer.model_max_length = config.max_text_positions()
    queries = {ROUTING_TOKENS[name]: config.super_link_queries[name] for name in config.routing_decoders}
    return VisionLLMProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, super_link_queries=queries
    )


def write_remote_code(folder: str | Path, classes: tuple = (VisionLLMForConditionalGeneration, VisionLLMProcessor)) -> list[str]:
    """
    Write into `folder` the code files `save_pretrained` ships with `classes` (each class's file and its sibling
    imports, copied by transformers' own `custom_object_save`); returns their names. Refreshes the code of a
    checkpoint folder whose weights and config stay as they are, such as the shipped demo model.
    """
    written = {Path(path).name for cls in classes for path in custom_object_save(cls, folder)}
    return sorted(written)


def save_checkpoint(model: VisionLLMForConditionalGeneration, processor: VisionLLMProcessor, out: str | Path):
    """Safetensors weights, config with `auto_map`, processor files and the flat remote code, in one folder."""
    model.save_pretrained(out)
    processor.save_pretrained(out)


def count_parameters(model: VisionLLMForConditionalGeneration) -> dict[str, int]:
    """Parameters per component; works on the meta device."""

    def count(module: torch.nn.Module) -> int:
        return sum(parameter.numel() for parameter in module.parameters())

    if model.config.model_type == "visionllm_v1":
        counts = {
            "image_tokenizer": count(model.model.image_tokenizer),
            "projector": count(model.model.projector) + count(model.model.location_embedding),
            "llm": count(model.model.language_model) + count(model.lm_head),
        }
        return {**counts, "total": sum(counts.values())}
    llm = count(model.model.language_model)
    if not model.config.tie_word_embeddings:
        llm += count(model.lm_head)
    counts = {
        "vision_tower": count(model.model.vision_tower),
        "projector": count(model.model.multi_modal_projector),
        "region_encoder": count(model.model.region_encoder) if model.model.region_encoder is not None else 0,
        "llm": llm,
    }
    if model.decoders is not None:
        counts["super_link"] = count(model.model.super_link)
        counts.update({f"decoder_{name}": count(decoder) for name, decoder in model.decoders.items()})
    counts["total"] = sum(counts.values())
    return counts




def build_tiny(
    seed: int = 0, decoders: bool = True, generation: bool = False, video_masks: bool = False
) -> tuple[VisionLLMForConditionalGeneration, VisionLLMProcessor]:
    """
    A random tiny model (CLIP vision + Llama, hidden 32) with an offline tokenizer; seconds on CPU. `video_masks`
    adds a tiny SAM 2 video tracker (masklets for `[SEG]` about a video).
    """
    from .presets import tiny_config
    from .tokenizer import add_special_tokens, train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    config = tiny_config(
        add_special_tokens(tokenizer), vocab_size=len(tokenizer), decoders=decoders, generation=generation,
        video_masks=video_masks,
    )
    torch.manual_seed(seed)
    model = VisionLLMForConditionalGeneration(config)
    model.config.training_history = ["random-init"]  # `visionllm-hf train` continues from it
    match_projector_norm_to_text(model)
    set_generation_tokens(model, tokenizer)
    return model, build_processor(config, tokenizer)


def build_demo(seed: int = 0) -> tuple[VisionLLMForConditionalGeneration, VisionLLMProcessor]:
    """The demo size (see `presets.demo_config`), randomly initialised, keypoints named as the synthetic shapes'."""
    from ..synthetic import KEYPOINTS
    from .presets import demo_config
    from .tokenizer import add_special_tokens, train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    config = demo_config(add_special_tokens(tokenizer), vocab_size=len(tokenizer), keypoint_names=list(KEYPOINTS))
    torch.manual_seed(seed)
    model = VisionLLMForConditionalGeneration(config)
    model.config.training_history = ["random-init"]  # `visionllm-hf train` continues from it
    match_projector_norm_to_text(model)
    set_generation_tokens(model, tokenizer)
    return model, build_processor(config, tokenizer)


@torch.no_grad()
def match_projector_norm_to_text(model: VisionLLMForConditionalGeneration):
    """
    Start the output LayerNorms of the projector and the region encoder (`config.projector_norm`) at the text
    embeddings' root-mean-square, so image and region tokens enter the LLM at the scale of words.
    """
    if not model.config.projector_norm:
        return
    scale = model.get_input_embeddings().weight.float().pow(2).mean().sqrt().item()
    model.model.multi_modal_projector.norm.weight.fill_(scale)
    region_projector = getattr(model.model.region_encoder, "projector", None)
    if isinstance(getattr(region_projector, "norm", None), torch.nn.LayerNorm):
        region_projector.norm.weight.fill_(scale)


def set_generation_tokens(model: VisionLLMForConditionalGeneration, tokenizer: PreTrainedTokenizerBase):
    """Generation stops at the tokenizer's EOS and pads with its pad token."""
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.config.text_config.pad_token_id = tokenizer.pad_token_id  # padding-free training reads it


__all__ = [
    "build_demo",
    "build_processor",
    "build_tiny",
    "count_parameters",
    "match_projector_norm_to_text",
    "save_checkpoint",
    "set_generation_tokens",
    "write_remote_code",
]
