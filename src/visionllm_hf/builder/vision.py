"""What the builder needs to know about a vision tower: feature selection, feature width, tokens per tile."""

import torch
from transformers import AutoModel, PreTrainedConfig


def feature_select_strategy(vision_config: PreTrainedConfig) -> str:
    """`"full"` for towers without a CLS token (SigLIP), `"default"` (drop the first token) otherwise."""
    return "full" if vision_config.model_type.startswith("siglip") else "default"


@torch.no_grad()
def probe_vision_features(vision_config: PreTrainedConfig, tile_size: int, feature_layer: int) -> tuple[int, int]:
    """
    Run a randomly initialised tower once on a blank tile; returns `(feature_dim, tokens_per_tile)` of the
    selected layer. Used for towers whose config does not state them (timm through `TimmWrapperConfig`).
    """
    tower = AutoModel.from_config(vision_config).eval()
    outputs = tower(torch.zeros(1, 3, tile_size, tile_size), output_hidden_states=True, return_dict=True)
    features = outputs.hidden_states[feature_layer]
    if features.dim() == 4:
        return features.shape[1], features.shape[2] * features.shape[3]
    drop = 1 if feature_select_strategy(vision_config) == "default" else 0
    return features.shape[-1], features.shape[1] - drop


__all__ = ["feature_select_strategy", "probe_vision_features"]
