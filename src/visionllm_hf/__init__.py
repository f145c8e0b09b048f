"""visionllm-hf: the VisionLLM family as one Hugging Face-native library.

Importing the package registers the classes with transformers' Auto classes, so a saved checkpoint loads with
`AutoModel.from_pretrained(path)` even without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .modeling import (
    VisionLLMCausalLMOutputWithPast,
    VisionLLMConfig,
    VisionLLMForConditionalGeneration,
    VisionLLMModel,
    VisionLLMPreTrainedModel,
    VisionLLMv1Config,
    VisionLLMv1ForConditionalGeneration,
)
from .processing import VisionLLMImageProcessor, VisionLLMProcessor
from .processing.processing_visionllm_v1 import VisionLLMv1Processor

__version__ = "0.1.0"

AutoConfig.register(VisionLLMConfig.model_type, VisionLLMConfig, exist_ok=True)
AutoModel.register(VisionLLMConfig, VisionLLMForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(VisionLLMConfig, VisionLLMForConditionalGeneration, exist_ok=True)
# One class serves every backend: it tiles with torch whatever transformers would pick.
AutoImageProcessor.register(
    VisionLLMConfig,
    image_processor_classes={"torchvision": VisionLLMImageProcessor, "pil": VisionLLMImageProcessor},
    exist_ok=True,
)
AutoProcessor.register(VisionLLMConfig, VisionLLMProcessor, exist_ok=True)
AutoConfig.register(VisionLLMv1Config.model_type, VisionLLMv1Config, exist_ok=True)
AutoModel.register(VisionLLMv1Config, VisionLLMv1ForConditionalGeneration, exist_ok=True)
AutoProcessor.register(VisionLLMv1Config, VisionLLMv1Processor, exist_ok=True)

__all__ = [
    "VisionLLMCausalLMOutputWithPast",
    "VisionLLMConfig",
    "VisionLLMForConditionalGeneration",
    "VisionLLMv1Config",
    "VisionLLMv1ForConditionalGeneration",
    "VisionLLMv1Processor",
    "VisionLLMImageProcessor",
    "VisionLLMModel",
    "VisionLLMPreTrainedModel",
    "VisionLLMProcessor",
]
