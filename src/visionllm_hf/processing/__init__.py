from .chat_template import CHAT_TEMPLATE
from .image_processing_visionllm import VisionLLMImageProcessor, load_image
from .processing_visionllm import VisionLLMProcessor
from .special_tokens import SPECIAL_TOKENS

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "VisionLLMImageProcessor", "VisionLLMProcessor", "load_image"]
