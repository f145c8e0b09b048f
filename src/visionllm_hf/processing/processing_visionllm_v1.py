"""VisionLLM (v1) processor: square images, `<image>` expanded to M tokens, `<class>` and `<range>` filled in,
the instruction also tokenized for the image tokenizer's BERT; results back in image coordinates.

This file ships with every v1 checkpoint (``trust_remote_code``): it imports only numpy, PIL, torch and
transformers.
"""

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs

IMAGE_TOKEN = "<image>"
CLASS_PLACEHOLDER = "<class>"
RANGE_PLACEHOLDER = "<range>"


def location_token(offset: int) -> str:
    return f"<p{offset}>"


def class_token(index: int) -> str:
    return f"<c{index}>"


class VisionLLMv1Processor(ProcessorMixin):
    """
    Arguments:
        image_processor: resizes every image to the model's square `image_size` (ImageNet normalisation).
        tokenizer: the LLM tokenizer with VisionLLM v1's tokens (one id each).
        num_image_tokens (`int`): M, the `<image>` tokens one image takes.
        location_range (`int`): R of the location tokens `<p-R>` .. `<pR>`.
    """

    text_kwargs = {"padding": True, "padding_side": "left"}  # defaults, overridden per call

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens: int = 100, location_range: int = 512, **kwargs):
        self.num_image_tokens = num_image_tokens
        self.location_range = location_range
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(self, images=None, text=None, categories=None, **kwargs) -> BatchFeature:
        """
        Args:
            images: one image per sample.
            text (`str` or `list[str]`): instructions with one `<image>`; `<class>` is replaced by the category
                set (`{"cat": <c0>, "dog": <c1>}`) and `<range>` by the location range.
            categories (`list[str]` or `list[list[str]]`, *optional*): the category set, per sample or shared.
            **kwargs: transformers' processor keyword arguments: the tokenizer's (`padding_side` (default left),
                `return_tensors` (default `"pt"`), ... or `text_kwargs={...}`) and the image processor's
                (`do_normalize`, ... or `images_kwargs={...}`).
        """
        merged = self._merge_kwargs(ProcessingKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs, images_kwargs = merged["text_kwargs"], merged["images_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", None) or "pt"
        images_kwargs.pop("return_tensors", None)
        texts = [text] if isinstance(text, str) else list(text)
        images = [images] if images is not None and not isinstance(images, (list, tuple)) else images
        if images is None or len(images) != len(texts):
            raise ValueError(f"VisionLLM v1 takes one image per sample: {len(texts)} texts, {0 if images is None else len(images)} images")
        per_sample = categories if categories and isinstance(categories[0], (list, tuple)) else [categories] * len(texts)
        filled = []
        for index, (sample, names) in enumerate(zip(texts, per_sample)):
            if sample.count(IMAGE_TOKEN) != 1:
                raise ValueError(f"sample {index} has {sample.count(IMAGE_TOKEN)} {IMAGE_TOKEN} placeholders; VisionLLM v1 takes exactly 1")
            if CLASS_PLACEHOLDER in sample:
                if not names:
                    raise ValueError(f"sample {index} asks for {CLASS_PLACEHOLDER} but no categories were given")
                sample = sample.replace(CLASS_PLACEHOLDER, self.category_set(names))
            sample = sample.replace(RANGE_PLACEHOLDER, f"{location_token(-self.location_range)} to {location_token(self.location_range)}")
            filled.append(sample)
        expanded = [sample.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.num_image_tokens) for sample in filled]
        encoded = self.tokenizer(expanded, return_tensors=return_tensors, **text_kwargs)
        prompt = self.tokenizer([s.replace(IMAGE_TOKEN, "") for s in filled], padding=True, return_tensors=return_tensors)
        images = [_as_rgb(image) for image in images]
        pixels = self.image_processor(images, return_tensors=return_tensors, **images_kwargs)["pixel_values"]
        data = {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "pixel_values": pixels,
            "prompt_input_ids": prompt["input_ids"],
            "prompt_attention_mask": prompt["attention_mask"],
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "prompt_input_ids", "prompt_attention_mask"]

    @staticmethod
    def category_set(names: list[str]) -> str:
        """`["cat", "dog"]` -> `{"cat": <c0>, "dog": <c1>}` (appendix A's category set)."""
        return "{" + ", ".join(f'"{name}": {class_token(index)}' for index, name in enumerate(names)) + "}"

    def post_process_object_detection(
        self, outputs, model_config, categories, target_sizes=None, threshold: float = 0.0, polygons_as_masks: bool = True
    ) -> list[dict]:
        """
        Boxes (5 fields) or polygons (`1 + 2N` fields) per sample from `decode_objects`, keeping only the
        categories of the instruction's `<class>` set.

        Returns:
            per sample `{"labels": [names], "scores": (n,), "boxes": (n, 4) xyxy}` plus `"polygons"` `(n, N, 2)` and
            `"masks"` `(n, h, w)` for polygons; in pixels of `target_sizes` (`(height, width)` each) when given.
        """
        per_sample = categories if categories and isinstance(categories[0], (list, tuple)) else [categories] * len(outputs.logits)
        config = model_config
        location_ids = config.location_token_start_id + torch.arange(config.num_location_bins)
        results = []
        for row, names in enumerate(per_sample):
            logits = outputs.logits[row].float().cpu()
            allowed = [config.class_token_start_id + index for index in range(len(names))] + [config.no_object_token_id]
            class_probabilities = logits[:, 0, allowed].softmax(-1)[:, :-1]
            scores, classes = class_probabilities.max(-1)
            offsets = logits[:, 1:, location_ids].argmax(-1) - config.location_range
            references = outputs.locations[row].float().cpu().repeat(1, (logits.shape[1] - 1) // 2)
            points = (references + offsets.float() / config.location_range).clamp(0, 1).view(len(logits), -1, 2)
            keep = scores > threshold
            scale = torch.ones(2)
            if target_sizes is not None:
                height, width = target_sizes[row]
                scale = torch.tensor([float(width), float(height)])
            points = points[keep] * scale
            result = {"labels": [names[int(c)] for c in classes[keep]], "scores": scores[keep]}
            if points.shape[1] == 2:
                result["boxes"] = points.flatten(1)
            else:
                result["polygons"] = points
                result["boxes"] = torch.cat([points.min(1).values, points.max(1).values], dim=-1)
                if polygons_as_masks and target_sizes is not None:
                    result["masks"] = _rasterise(points, target_sizes[row])
            results.append(result)
        return results


    # the name the VisionLLM v2 processor uses for its structured results
    post_process_generation = post_process_object_detection


def _as_rgb(image):
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    raise TypeError(f"images must be PIL images or HWC uint8 arrays, got {type(image).__name__}")


def _rasterise(polygons: torch.Tensor, size) -> torch.Tensor:
    height, width = int(size[0]), int(size[1])
    masks = []
    for polygon in polygons.tolist():
        canvas = Image.new("1", (width, height))
        ImageDraw.Draw(canvas).polygon([tuple(point) for point in polygon], fill=1)
        masks.append(torch.from_numpy(np.array(canvas)))
    return torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.bool)


VisionLLMv1Processor.register_for_auto_class("AutoProcessor")

__all__ = ["VisionLLMv1Processor", "class_token", "location_token"]
