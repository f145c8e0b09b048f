from .configuration_visionllm import VisionLLMConfig
from .configuration_visionllm_v1 import VisionLLMv1Config
from .modeling_visionllm import (
    VisionLLMCausalLMOutputWithPast,
    VisionLLMForConditionalGeneration,
    VisionLLMModel,
    VisionLLMModelOutputWithPast,
    VisionLLMPreTrainedModel,
)
from .modeling_visionllm_v1 import VisionLLMv1ForConditionalGeneration

__all__ = [
    "VisionLLMCausalLMOutputWithPast",
    "VisionLLMConfig",
    "VisionLLMForConditionalGeneration",
    "VisionLLMModel",
    "VisionLLMModelOutputWithPast",
    "VisionLLMPreTrainedModel",
    "VisionLLMv1Config",
    "VisionLLMv1ForConditionalGeneration",
]
