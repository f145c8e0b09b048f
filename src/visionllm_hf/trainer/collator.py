"""Batch training samples: chat template, processor (right padding), labels on the answers only, decoder targets.

A sample is a dict:

- `messages`: a conversation in the transformers chat format (`{"role": "user" | "assistant", "content": ...}`),
  with `<image>` and `<region>` placeholders in the text;
- `images`: the sample's images, one per `<image>`;
- `videos` (optional): the sample's videos, one per `<video>` (frame folders, files, frame lists or arrays);
- `regions` (optional): per image, a list of regions (see `processing/regions.py`), one per `<region>`;
- `targets` (optional): one decoder target per routing token of the assistant turns, in order;
- `task` (optional): the task group the sample belongs to.

Labels keep only the assistant answers (from after each `ASSISTANT:` up to and including its end-of-sequence
token); system prompt, user turns, image, region, `<query>` and padding positions are -100.
"""

import torch

from ..processing.special_tokens import IMAGE_TOKEN, QUERY_TOKEN, REGION_TOKEN

IGNORE_INDEX = -100


class VisionLLMCollator:
    """
    Arguments:
        processor (`VisionLLMProcessor`): the checkpoint's processor (its chat template and tokenizer).
        response_marker (`str`, defaults to `" ASSISTANT:"`): the text that opens every assistant turn in the
            rendered chat template.
        max_length (`int`, *optional*): truncate longer sequences (an error if that cuts into an image).
        caption_features (`CaptionFeatures`, *optional*): Stable Diffusion's text encoder; targets with a
            `caption` (generation and editing) then get its features as `text_embeds`, for the text-feature loss.
    """

    def __init__(
        self, processor, response_marker: str = " ASSISTANT:", max_length: int | None = None, caption_features=None
    ):
        self.processor = processor
        tokenizer = processor.tokenizer
        self.response_ids = tokenizer.encode(response_marker, add_special_tokens=False)
        self.eos_id = tokenizer.eos_token_id
        self.never_labelled = torch.tensor(
            [tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, REGION_TOKEN, QUERY_TOKEN)]
            + [tokenizer.pad_token_id]
        )
        self.max_length = max_length
        self.caption_features = caption_features

    def __call__(self, samples: list) -> dict:
        samples = [sample for item in samples for sample in (item if isinstance(item, list) else [item])]
        texts = [self.processor.apply_chat_template(sample["messages"], tokenize=False) for sample in samples]
        images = [list(sample.get("images") or []) for sample in samples]
        regions = [sample.get("regions") or [[] for _ in sample_images] for sample, sample_images in zip(samples, images)]
        videos = [video for sample in samples for video in sample.get("videos") or []]
        tokenizer_kwargs = {"padding_side": "right"}
        if self.max_length is not None:
            tokenizer_kwargs.update(truncation=True, max_length=self.max_length)
        batch = dict(
            self.processor(
                images=images if any(images) else None,
                text=texts,
                regions=regions if any(any(r) for r in regions) else None,
                videos=videos or None,
                **tokenizer_kwargs,
            )
        )
        batch["labels"] = self.answer_labels(batch["input_ids"])
        if any("targets" in sample for sample in samples):
            batch["super_link_targets"] = [self._with_text_features(sample.get("targets", [])) for sample in samples]
        return batch

    def _with_text_features(self, targets: list[dict]) -> list[dict]:
        if self.caption_features is None or not any("caption" in target for target in targets):
            return list(targets)
        captioned = [target for target in targets if "caption" in target]
        features = self.caption_features([target["caption"] for target in captioned])
        by_id = {id(target): feature for target, feature in zip(captioned, features)}
        return [{**target, "text_embeds": by_id[id(target)]} if id(target) in by_id else target for target in targets]

    def answer_labels(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """-100 everywhere except the assistant answers (marker excluded, end-of-sequence token included)."""
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        marker = len(self.response_ids)
        for row, ids in enumerate(input_ids.tolist()):
            position = 0
            while position <= len(ids) - marker:
                if ids[position : position + marker] != self.response_ids:
                    position += 1
                    continue
                start = position + marker
                end = start
                while end < len(ids) and ids[end] != self.eos_id:
                    end += 1
                end = min(end + 1, len(ids))  # the answer's end-of-sequence token is learnt too
                labels[row, start:end] = input_ids[row, start:end]
                position = end
        return labels.masked_fill(torch.isin(input_ids, self.never_labelled), IGNORE_INDEX)


__all__ = ["IGNORE_INDEX", "VisionLLMCollator"]
