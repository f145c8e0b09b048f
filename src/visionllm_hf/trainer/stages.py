"""Training stage presets: what is frozen, what gets LoRA, and each module group's learning rate.

The numbers come from the papers: VisionLLM v2 table A12 (paper 002), RegionGPT section 4 (paper 003) and
u-LLaVA section 4 (paper 004). All use AdamW with weight decay 0 and a cosine schedule with 3% warm-up.
"""

import re
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model

from ..modeling.configuration_visionllm_v1 import MAX_BOUNDARY_POINTS
from ..processing.special_tokens import SPECIAL_TOKENS

# module group -> parameter-name prefixes in VisionLLMForConditionalGeneration (v2) and, after them, in
# VisionLLMv1ForConditionalGeneration (the first matching group wins, so the v1 backbone precedes its tokenizer)
MODULE_GROUPS = {
    "vision_tower": ("model.vision_tower.",),
    "projector": ("model.multi_modal_projector.", "model.projector.", "model.location_embedding."),
    "region_encoder": ("model.region_encoder.",),
    "llm": ("model.language_model.", "lm_head."),
    "super_link": ("model.super_link.",),
    "decoders": ("decoders.",),
    "image_backbone": ("model.image_tokenizer.detector.backbone.backbone.",),
    "image_tokenizer": ("model.image_tokenizer.",),
}
V2_GROUPS = ("vision_tower", "projector", "region_encoder", "llm", "super_link", "decoders")
LLM_LINEAR_LAYERS = r".*language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class StagePreset:
    """
    Arguments:
        learning_rates: module group -> learning rate; groups left out are frozen.
        lora: LoRA `r` and `alpha` for the LLM's linear layers (the LLM's own weights then stay frozen and its
            learning rate applies to the adapters and the new token rows), or None to train the LLM fully.
        description: one line for the model card.
    """

    learning_rates: dict[str, float]
    lora: dict[str, int] | None = None
    description: str = ""
    weight_decay: float = 0.0
    model_type: str = "visionllm"  # the model family the preset is for


STAGES = {
    "v2-pretrain": StagePreset(
        {"region_encoder": 1e-3, "projector": 1e-3},
        description="VisionLLM v2 stage 1 pretraining: region encoder and projector, LLM frozen",
    ),
    "v2-tune": StagePreset(
        {"llm": 2.5e-5, "projector": 2.5e-5, "region_encoder": 2.5e-5},
        description="VisionLLM v2 stage 1 instruction tuning: LLM fully trained",
    ),
    "v2-decoders": StagePreset(
        {"llm": 1e-5, "region_encoder": 1e-5, "super_link": 1e-4, "decoders": 1e-4},
        lora={"r": 32, "alpha": 64},
        description="VisionLLM v2 stage 2: decoders added, LLM through LoRA r=32 alpha=64",
    ),
    "v2-decoders-only": StagePreset(
        {"super_link": 1e-4, "decoders": 1e-4},
        description="VisionLLM v2 stage 3: decoders and super-link queries only",
    ),
    "regiongpt-pretrain": StagePreset(
        {"region_encoder": 1e-3, "projector": 1e-3},
        description="RegionGPT pretraining: feature refinement and connector",
    ),
    "regiongpt-finetune": StagePreset(
        {"region_encoder": 2e-5, "projector": 2e-5, "llm": 2e-5},
        description="RegionGPT finetuning: refinement, connector and LLM",
    ),
    "from-scratch": StagePreset(  # collapses the image tokens of a random tower and LLM (README, issue 21)
        {group: 1e-3 for group in V2_GROUPS},
        description="every module trained from random initialisation",
    ),
    "ullava": StagePreset(
        {"projector": 2e-5, "llm": 2e-5, "super_link": 2e-5, "decoders": 2e-5},
        description="u-LLaVA instruction training: projector, LLM, <LOC>/<SEG> projectors and decoders",
    ),
    "v1-stage1": StagePreset(
        {"image_backbone": 2e-5, "image_tokenizer": 2e-4, "projector": 2e-4, "llm": 2e-4},
        lora={"r": 8, "alpha": 16},
        description="VisionLLM v1 stage 1: detection; image tokenizer trainable, LLM through LoRA",
        model_type="visionllm_v1",
    ),
    "v1-stage2": StagePreset(
        {"image_tokenizer": 2e-4, "projector": 2e-4, "llm": 2e-4},
        lora={"r": 8, "alpha": 16},
        description="VisionLLM v1 stage 2: multi-task; backbone frozen, tokenizer and LoRA trained",
        model_type="visionllm_v1",
    ),
    "v1-from-scratch": StagePreset(
        {"image_backbone": 1e-3, "image_tokenizer": 1e-3, "projector": 1e-3, "llm": 1e-3},
        description="every VisionLLM v1 module trained from random initialisation (no pretrained LLM to adapt)",
        model_type="visionllm_v1",
    ),
}


# The stage that continues a checkpoint, by the last entry of its `config.training_history`: the next stage of
# the papers' order, or the same one again; a model trained from random weights keeps training everything.
CONTINUING_STAGE = {
    "visionllm": {
        "random-init": "from-scratch",
        "from-scratch": "from-scratch",
        "pretrained-parts": "v2-pretrain",
        "v2-pretrain": "v2-tune",
        "v2-tune": "v2-decoders",
        "v2-decoders": "v2-decoders",
        "v2-decoders-only": "v2-decoders-only",
        "regiongpt-pretrain": "regiongpt-finetune",
        "regiongpt-finetune": "regiongpt-finetune",
        "ullava": "ullava",
    },
    "visionllm_v1": {
        "random-init": "v1-from-scratch",
        "v1-from-scratch": "v1-from-scratch",
        "pretrained-parts": "v1-stage1",
        "v1-stage1": "v1-stage2",
        "v1-stage2": "v1-stage2",
    },
}
UNRECORDED_DEFAULT = {"visionllm": "v2-decoders", "visionllm_v1": "v1-stage2"}


def continuing_stage(model_type: str, history: list[str] | None) -> tuple[str, str]:
    """The stage to continue a checkpoint with, and why (for the message `visionllm-hf train` prints)."""
    if not history or history[-1] not in CONTINUING_STAGE[model_type]:
        stage = UNRECORDED_DEFAULT[model_type]
        return stage, f"the checkpoint records no training history, so the default '{stage}'"
    stage = CONTINUING_STAGE[model_type][history[-1]]
    return stage, f"the checkpoint's history is {' -> '.join(history)}, so '{stage}' continues it"


ALWAYS_FROZEN = re.compile(r"^decoders\.[^.]+\.vae\.")  # the diffusion decoders' VAE (SD, InstructPix2Pix)


def module_group(parameter_name: str) -> str | None:
    """The group a parameter belongs to (PEFT's `base_model.model.` prefix ignored); None for frozen-always."""
    name = parameter_name.removeprefix("base_model.model.")
    if ALWAYS_FROZEN.match(name):
        return None
    for group, prefixes in MODULE_GROUPS.items():
        if name.startswith(prefixes):
            return group
    return None


def apply_stage(model, stage: str):
    """
    Freeze and unfreeze `model` for `stage`, wrapping the LLM with LoRA when the stage asks; returns the model
    to train (a `PeftModel` under LoRA).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}'; choose from {sorted(STAGES)}")
    preset = STAGES[stage]
    if model.config.model_type != preset.model_type:
        raise ValueError(f"stage '{stage}' is for {preset.model_type} models, not {model.config.model_type}")
    if preset.lora is not None:
        new_rows = new_token_rows(model.config)
        lora = LoraConfig(
            r=preset.lora["r"],
            lora_alpha=preset.lora["alpha"],
            lora_dropout=0.0,
            target_modules=LLM_LINEAR_LAYERS,
            trainable_token_indices={"embed_tokens": sorted(new_rows)},
        )
        model = get_peft_model(model, lora)
    for name, parameter in model.named_parameters():
        group = module_group(name)
        if preset.lora is not None and group == "llm":
            continue  # PEFT decides: adapters and new token rows train, the base weights stay frozen
        parameter.requires_grad_(group in preset.learning_rates)
    return model


def new_token_rows(config) -> list[int]:
    """Embedding rows of the tokens VisionLLM added to the vocabulary (trained under LoRA)."""
    if config.model_type == "visionllm_v1":  # added in one run: <image> ... <y24>
        return list(range(config.image_token_id, config.coordinate_query_start_id + 2 * MAX_BOUNDARY_POINTS))
    return [getattr(config, name) for name in SPECIAL_TOKENS if getattr(config, name) is not None]


def build_optimizer(model, stage: str, learning_rate_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW with one parameter group per module group, at the stage's learning rates (times the scale)."""
    preset = STAGES[stage]
    groups: dict[str, list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            group = module_group(name)
            if group not in preset.learning_rates:
                raise ValueError(f"parameter {name} is trainable but stage '{stage}' gives its group no learning rate")
            groups.setdefault(group, []).append(parameter)
    param_groups = [
        {"params": params, "lr": preset.learning_rates[group] * learning_rate_scale, "name": group}
        for group, params in groups.items()
    ]
    return torch.optim.AdamW(param_groups, weight_decay=preset.weight_decay)


__all__ = [
    "LLM_LINEAR_LAYERS",
    "MODULE_GROUPS",
    "STAGES",
    "StagePreset",
    "apply_stage",
    "build_optimizer",
    "continuing_stage",
    "module_group",
]
