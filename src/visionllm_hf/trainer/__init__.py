"""Fine-tuning: the Trainer subclass, the collator, dataset adapters, stage presets, LoRA saving, the CLI."""

from .collator import VisionLLMCollator
from .data import CocoSource, ConversationSource, DatasetSource, MixedTaskDataset, ReferringSource
from .lora import load_adapter, save_adapter
from .stages import STAGES, apply_stage, build_optimizer
from .trainer import ComponentLossCallback, VisionLLMTrainer

__all__ = [
    "STAGES",
    "CocoSource",
    "ComponentLossCallback",
    "ConversationSource",
    "DatasetSource",
    "MixedTaskDataset",
    "ReferringSource",
    "VisionLLMCollator",
    "VisionLLMTrainer",
    "apply_stage",
    "build_optimizer",
    "load_adapter",
    "save_adapter",
]
