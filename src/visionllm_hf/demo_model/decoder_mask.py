"""`[SEG]` mask decoder on transformers' SAM (u-LLaVA / LISA style): the projected super-link states are SAM's
sparse prompt embeddings; SAM's own image encoder reads the decoder image. Loss: BCE + Dice.

For interactive segmentation the user's visual prompt (a `<region>`: point, box, scribble or mask, rasterised by
the processor) also goes to SAM itself, through SAM's dense mask prompt (its prompt encoder's `mask_embed`),
so SAM sees where the user pointed as it was built to; `[SEG]` tokens without a visual prompt use SAM's
`no_mask_embed`, as before.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and transformers.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, SamModel


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over each mask, averaged: `1 - (2|P∩T| + eps) / (|P| + |T| + eps)`."""
    probabilities = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    overlap = (probabilities * targets).sum(-1)
    return (1 - (2 * overlap + eps) / (probabilities.sum(-1) + targets.sum(-1) + eps)).mean()


class PromptableMaskDecoder(nn.Module):
    """
    Arguments:
        sam_config (`SamConfig`): config of the SAM model (vision encoder, prompt encoder, mask decoder).
    """

    needs_image = True
    reads_visual_prompts = True

    def __init__(self, *, sam_config: PreTrainedConfig):
        super().__init__()
        self.sam = SamModel(sam_config)
        self.input_width = sam_config.mask_decoder_config.hidden_size

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """SAM image embeddings `(images, width, h, w)` of decoder images at SAM's input size."""
        dtype = self.sam.vision_encoder.get_input_embeddings().projection.weight.dtype
        return self.sam.vision_encoder(pixel_values.to(dtype)).last_hidden_state

    def forward(
        self,
        prompts: torch.Tensor,
        image_features: torch.Tensor,
        rows: torch.LongTensor,
        visual_prompts: list[torch.Tensor | None] | None = None,
    ) -> dict:
        """
        Args:
            prompts (`(occurrences, tokens, width)`): projected super-link states, SAM's sparse prompts.
            image_features (`(images, width, h, w)`): from `encode_images`.
            rows (`(occurrences,)`): each occurrence's image in `image_features`.
            visual_prompts (`list`, *optional*): per occurrence, a 2-D mask over the whole image (any size) or
                None; given masks become SAM's dense prompts.

        Returns:
            `{"mask_logits": (occurrences, 4h, 4w), "scores": (occurrences,)}` with SAM's predicted IoU as score.
        """
        embeddings = image_features[rows]
        count = len(rows)
        positional = self.sam.get_image_wide_positional_embeddings().expand(count, -1, -1, -1)
        dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(embeddings)
        given = [i for i, mask in enumerate(visual_prompts or []) if mask is not None]
        if given:
            size = (4 * embeddings.shape[-2], 4 * embeddings.shape[-1])  # SAM's mask input: 4x its grid
            masks = torch.stack([
                F.interpolate(visual_prompts[i].to(embeddings.device, torch.float32)[None, None], size, mode="area")[0]
                for i in given
            ])
            dense = dense.clone()
            dense[given] = self.sam.prompt_encoder.mask_embed(masks.to(embeddings.dtype)).to(dense.dtype)
        masks, iou = self.sam.mask_decoder(
            image_embeddings=embeddings,
            image_positional_embeddings=positional.to(embeddings.dtype),
            sparse_prompt_embeddings=prompts[:, None].to(embeddings.dtype),
            dense_prompt_embeddings=dense.to(embeddings.dtype),
            multimask_output=False,
        )
        return {"mask_logits": masks[:, 0, 0], "scores": iou[:, 0, 0]}

    def compute_loss(self, predictions: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        logits = predictions["mask_logits"]
        target = torch.stack([_resize_mask(t["mask"], logits.shape[-2:]).to(logits) for t in targets])
        return {
            "mask_bce": F.binary_cross_entropy_with_logits(logits, target),
            "mask_dice": dice_loss(logits, target),
        }

    def results(self, predictions: dict) -> list[dict]:
        """One mask per occurrence as probabilities at SAM's low resolution, scored by the predicted IoU."""
        return [
            {"masks": logits.sigmoid()[None], "scores": score.clamp(0, 1)[None]}
            for logits, score in zip(predictions["mask_logits"], predictions["scores"])
        ]


def _resize_mask(mask, size) -> torch.Tensor:
    mask = torch.as_tensor(mask, dtype=torch.float32)
    return F.interpolate(mask[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0].round()


__all__ = ["PromptableMaskDecoder", "dice_loss"]
