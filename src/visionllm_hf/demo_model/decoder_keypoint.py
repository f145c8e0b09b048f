"""`[POSE]` keypoint decoder, UniPose-style: object queries find the instances, keypoint-name queries find
their keypoints.

The instance part is the object decoder (Grounding DINO fed with the `[POSE]` category features). For each
object query, one query per keypoint name (a learnable embedding per name, plus the object query's state) runs
through a small transformer decoder over the per-pixel embeddings and predicts that keypoint's (x, y) and a
visibility logit. As in ED-Pose and UniPose, keypoints live in their instance's frame: the head predicts an
offset from the query's box centre in units of the box size (tanh, so at most one box size away), which puts
every keypoint on its instance from the start and leaves only the within-instance layout to learn. Training
reuses the object decoder's Hungarian matches: L1 on visible keypoints and BCE on visibility, on top of the
detection losses.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and its siblings.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig

from .decoder_object import ObjectDecoder


class KeypointDecoder(ObjectDecoder):
    """
    Arguments:
        detector_config (`GroundingDinoConfig`): config of the instance detector.
        num_keypoints (`int`): keypoint names per instance (17 for COCO people).
        num_layers (`int`, defaults to 2): layers of the keypoint transformer decoder.
    """

    def __init__(self, *, detector_config: PreTrainedConfig, num_keypoints: int, num_layers: int = 2):
        super().__init__(detector_config=detector_config)
        width = detector_config.d_model
        self.keypoint_names = nn.Embedding(num_keypoints, width)
        layer = nn.TransformerDecoderLayer(
            width, detector_config.decoder_attention_heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True
        )
        self.keypoint_decoder = nn.TransformerDecoder(layer, num_layers)
        self.keypoint_head = nn.Linear(width, 3)  # x, y, visibility logit

    def forward(self, prompts: torch.Tensor, image_features: torch.Tensor, rows: torch.LongTensor) -> dict:
        """The object decoder's predictions plus `keypoints` `(images, queries, K, 3)`: normalised x, y, logit."""
        predictions = super().forward(prompts, image_features, rows)
        states, pixels = predictions["query_states"], predictions["pixel_embeddings"]
        images, queries, width = states.shape
        count = self.keypoint_names.num_embeddings
        targets = states[:, :, None] + self.keypoint_names.weight[None, None]  # images, queries, K, width
        memory = pixels.flatten(2).transpose(1, 2)  # images, h * w, width
        # one sequence per image; a keypoint query attends only to the keypoints of its own object
        instance = torch.arange(queries * count, device=states.device) // count
        other_instance = instance[:, None] != instance[None, :]
        decoded = self.keypoint_decoder(targets.flatten(1, 2), memory, tgt_mask=other_instance)
        head = self.keypoint_head(decoded).view(images, queries, count, 3)
        boxes = predictions["boxes"][:, :, None]  # cxcywh, normalised
        xy = boxes[..., :2] + head[..., :2].tanh() * boxes[..., 2:]
        predictions["keypoints"] = torch.cat([xy, head[..., 2:]], dim=-1)
        return predictions

    def compute_loss(self, predictions: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """
        `targets`, one per occurrence: `{"boxes": (n, 4), "keypoints": (n, K, 3)}` with normalised x, y and a
        visibility flag (0: not labelled, 1 or 2: labelled, COCO style).
        """
        matches = self.match(predictions, targets)
        losses = {**self.detection_losses(predictions, matches), **self.auxiliary_losses(predictions, targets)}
        keypoints = predictions["keypoints"]
        with_keypoints = [m for m in matches if "keypoints" in m]
        if not with_keypoints:
            losses["pose_l1"] = losses["pose_visibility"] = keypoints.sum() * 0.0
            return losses
        predicted = torch.cat([keypoints[m["image"], m["query"]] for m in with_keypoints])
        target = torch.cat([m["keypoints"][m["target"]] for m in with_keypoints]).to(predicted)
        visible = (target[..., 2] > 0).to(predicted)
        l1 = (predicted[..., :2] - target[..., :2]).abs().sum(-1)
        losses["pose_l1"] = (l1 * visible).sum() / visible.sum().clamp_min(1)
        losses["pose_visibility"] = F.binary_cross_entropy_with_logits(predicted[..., 2], visible)
        return losses

    def results(self, predictions: dict) -> list[dict]:
        """The object decoder's results plus `keypoints` `(n, K, 3)`: x, y normalised (inside the image), visibility
        probability."""
        results = super().results(predictions)
        for result, row in zip(results, predictions["rows"].tolist()):
            chosen = predictions["keypoints"][row, result["queries"]]
            result["keypoints"] = torch.cat([chosen[..., :2].clamp(0, 1), chosen[..., 2:].sigmoid()], dim=-1)
        return results


__all__ = ["KeypointDecoder"]
