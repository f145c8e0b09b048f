from .configuration_visionllm import VisionLLMConfig
from .modeling_visionllm import (
    VisionLLMCausalLMOutputWithPast,
    VisionLLMForConditionalGeneration,
    VisionLLMModel,
    VisionLLMModelOutputWithPast,
    VisionLLMPreTrainedModel,
)

__all__ = [
    "VisionLLMCausalLMOutputWithPast",
    "VisionLLMConfig",
    "VisionLLMForConditionalGeneration",
    "VisionLLMModel",
    "VisionLLMModelOutputWithPast",
    "VisionLLMPreTrainedModel",
]
