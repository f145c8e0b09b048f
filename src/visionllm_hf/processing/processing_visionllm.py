"""VisionLLM processor: tokenizer + dynamic-resolution image processor, expanding each `<image>` to its tokens.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch, transformers and its
siblings in this folder.
"""

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_visionllm import flatten_images
from .special_tokens import IMAGE_TOKEN


class VisionLLMProcessor(ProcessorMixin):
    r"""
    Prepares text and images for [`VisionLLMForConditionalGeneration`].

    Each `<image>` in the text is replaced by `(tiles of that image) * image_seq_length` copies of `<image>`, the
    positions the model fills with image features. Batches are padded on the tokenizer's padding side (left for
    generation).

    Args:
        image_processor ([`VisionLLMImageProcessor`]):
            Tiles images.
        tokenizer ([`PreTrainedTokenizerBase`]):
            A tokenizer in which `<image>` is one special token.
        chat_template (`str`, *optional*):
            Jinja template used by `apply_chat_template`.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.image_token = IMAGE_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {IMAGE_TOKEN} token; build it with `visionllm-hf build`")

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        **tokenizer_kwargs,
    ) -> BatchFeature:
        r"""
        Args:
            images (*optional*):
                One image, a flat list consumed in `<image>` order across the batch, or one list per sample.
                Each image is a path, `PIL.Image`, numpy HWC array or torch CHW tensor.
            text (`str` or `list[str]`):
                Prompts; each `<image>` marks where one image goes.
            return_tensors (`str`, *optional*, defaults to `"pt"`):
                Tensor type of the output.
            padding (`bool` or `str`, *optional*, defaults to `True`):
                Padding strategy passed to the tokenizer.
            **tokenizer_kwargs:
                Passed to the tokenizer (`padding_side`, `truncation`, `max_length`, ...).

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask` and, when images are given, `pixel_values` and
            `image_grids`.
        """
        if text is None:
            raise ValueError("text is required: each <image> in it marks where an image goes")
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(sample, str) for sample in texts):
            raise TypeError("text must be a string or a list of strings")
        images_per_sample = self._assign_images(images, texts)

        data = {}
        image_tokens_per_sample = [0] * len(texts)
        if any(images_per_sample):
            image_inputs = self.image_processor(flatten_images(images_per_sample), return_tensors="pt")
            grids = iter(image_inputs["image_grids"].tolist())
            expanded = []
            for index, sample in enumerate(texts):
                pieces = sample.split(IMAGE_TOKEN)
                counts = [self.image_processor.num_image_tokens(next(grids)) for _ in pieces[1:]]
                image_tokens_per_sample[index] = sum(counts)
                expanded.append(pieces[0] + "".join(IMAGE_TOKEN * n + piece for n, piece in zip(counts, pieces[1:])))
            texts = expanded
            data.update(image_inputs)

        text_inputs = self.tokenizer(texts, padding=padding, return_tensors=return_tensors, **tokenizer_kwargs)
        self._check_image_token_counts(text_inputs["input_ids"], image_tokens_per_sample)
        data.update(text_inputs)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _assign_images(self, images, texts: list[str]) -> list[list]:
        """Split `images` into one list per sample and check each sample's count against its placeholders."""
        placeholders = [sample.count(IMAGE_TOKEN) for sample in texts]
        if images is None:
            if any(placeholders):
                raise ValueError(
                    f"the text has {sum(placeholders)} {IMAGE_TOKEN} placeholders but no images were given"
                )
            return [[] for _ in texts]
        nested = isinstance(images, (list, tuple)) and len(images) == len(texts) and all(
            isinstance(item, (list, tuple)) for item in images
        )
        if nested:
            for index, (sample_images, count) in enumerate(zip(images, placeholders)):
                if len(sample_images) != count:
                    raise ValueError(
                        f"sample {index} has {count} {IMAGE_TOKEN} placeholders but {len(sample_images)} images"
                    )
            return [list(sample_images) for sample_images in images]
        flat = flatten_images(images)
        if len(flat) != sum(placeholders):
            raise ValueError(
                f"the text has {sum(placeholders)} {IMAGE_TOKEN} placeholders but {len(flat)} images were given"
            )
        ends = torch.tensor(placeholders).cumsum(0).tolist()
        return [flat[end - count : end] for end, count in zip(ends, placeholders)]

    def _check_image_token_counts(self, input_ids, expected: list[int]):
        for index, (ids, count) in enumerate(zip(input_ids, expected)):
            found = int((torch.as_tensor(ids) == self.image_token_id).sum())
            if found != count:
                raise ValueError(
                    f"sample {index} should hold {count} image tokens after tokenisation but holds {found}; "
                    "truncation may have cut into an image, or the text contains stray image tokens"
                )

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_grids"]


VisionLLMProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["VisionLLMProcessor"]
