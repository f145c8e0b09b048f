"""`<LOC>` box decoder (u-LLaVA, paper 004 section 3.2): projected state -> MLP [256 -> 256 -> 128 -> 4] -> box.

The box is predicted as a sigmoid (cx, cy, w, h) in [0, 1] of the image and returned as normalised xyxy, so
every prediction is a valid box. Loss: L1 + GIoU (torchvision.ops), weights from the config.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and torchvision.
"""

import torch
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss


class BoxDecoder(nn.Module):
    """
    Arguments:
        input_width (`int`, defaults to 256): width of the projected super-link state.
    """

    needs_image = False

    def __init__(self, *, input_width: int = 256):
        super().__init__()
        self.input_width = input_width
        self.mlp = nn.Sequential(
            nn.Linear(input_width, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 4)
        )

    def forward(self, prompts: torch.Tensor, image_features=None, rows=None) -> dict[str, torch.Tensor]:
        """`prompts` `(occurrences, tokens, width)` -> `{"boxes": (occurrences, 4)}` normalised xyxy."""
        centre_size = self.mlp(prompts.mean(dim=1)).sigmoid()
        return {"boxes": box_convert(centre_size, "cxcywh", "xyxy")}

    def compute_loss(self, predictions: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        boxes = predictions["boxes"]
        target = torch.stack([torch.as_tensor(t["box"], dtype=boxes.dtype, device=boxes.device) for t in targets])
        return {
            "box_l1": nn.functional.l1_loss(boxes, target),
            "box_giou": generalized_box_iou_loss(boxes, target, reduction="mean"),
        }

    def results(self, predictions: dict) -> list[dict]:
        """One box per occurrence; the decoder has no confidence head, so its score is 1."""
        return [{"boxes": box[None], "scores": box.new_ones(1)} for box in predictions["boxes"]]


__all__ = ["BoxDecoder"]
