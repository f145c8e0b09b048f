"""What the builder needs to know about a vision tower: feature selection, tile size, feature width and tokens."""

import torch
from transformers import AutoModel, PreTrainedConfig


def feature_select_strategy(vision_config: PreTrainedConfig) -> str:
    """`"full"` for towers without a CLS token (SigLIP), `"default"` (drop the first token) otherwise."""
    return "full" if vision_config.model_type.startswith("siglip") else "default"


@torch.no_grad()
def probe_vision_features(
    vision_config: PreTrainedConfig, feature_layer: int, tile_size: int | None = None
) -> dict[str, int]:
    """
    Build a randomly initialised tower and run it once on a blank tile, for towers whose config does not state
    their geometry (timm through `TimmWrapperConfig`).

    Returns:
        `dict` with `tile_size` (given, else the timm model's fixed input size, else its pretrained input size),
        `vision_feature_dim` and `image_seq_length` of the selected layer.
    """
    tower = AutoModel.from_config(vision_config).eval()
    if tile_size is None:
        tile_size = _native_input_size(tower)
    outputs = tower(torch.zeros(1, 3, tile_size, tile_size), output_hidden_states=True, return_dict=True)
    features = outputs.hidden_states[feature_layer]
    if features.dim() == 4:
        dim, tokens = features.shape[1], features.shape[2] * features.shape[3]
    else:
        drop = 1 if feature_select_strategy(vision_config) == "default" else 0
        dim, tokens = features.shape[-1], features.shape[1] - drop
    return {"tile_size": tile_size, "vision_feature_dim": dim, "image_seq_length": tokens}


def _native_input_size(tower: torch.nn.Module) -> int:
    timm_model = getattr(tower, "timm_model", tower)
    patch_embed = getattr(timm_model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None) is not None:
        return int(patch_embed.img_size[-1])
    return int(timm_model.pretrained_cfg["input_size"][-1])


__all__ = ["feature_select_strategy", "probe_vision_features"]
