"""Build VisionLLM checkpoints: tiny random models, the paper's sizes on the meta device, pretrained assembly."""

from .assemble import assemble_from_pretrained, resize_embeddings_to_mean
from .checkpoint import build_demo, build_processor, build_tiny, count_parameters, save_checkpoint, write_remote_code
from .presets import assembly_fields, make_config, tiny_config, visionllm_v2_config
from .tokenizer import add_special_tokens, train_tiny_tokenizer

__all__ = [
    "add_special_tokens",
    "assemble_from_pretrained",
    "assembly_fields",
    "build_demo",
    "build_processor",
    "build_tiny",
    "count_parameters",
    "make_config",
    "resize_embeddings_to_mean",
    "save_checkpoint",
    "tiny_config",
    "train_tiny_tokenizer",
    "visionllm_v2_config",
    "write_remote_code",
]
