from .chat_template import CHAT_TEMPLATE
from .image_processing_visionllm import VisionLLMImageProcessor, load_image
from .processing_visionllm import VisionLLMProcessor
from .regions import rasterize_region
from .special_tokens import SPECIAL_TOKENS
from .templates import (
    parse_category_answer,
    parse_region_answer,
    referring_comprehension_answer,
    referring_comprehension_prompt,
    region_caption_prompt,
    region_classification_prompt,
)

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "VisionLLMImageProcessor",
    "VisionLLMProcessor",
    "load_image",
    "parse_category_answer",
    "parse_region_answer",
    "rasterize_region",
    "referring_comprehension_answer",
    "referring_comprehension_prompt",
    "region_caption_prompt",
    "region_classification_prompt",
]
