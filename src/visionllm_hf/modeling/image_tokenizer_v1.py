"""VisionLLM (v1) language-guided image tokenizer (paper 000 section 3.3, appendix B).

A backbone (through Deformable DETR's `AutoBackbone` loading: ResNet, or Swin where available) gives 4 scales;
a BERT encodes the prompt, and at every scale the visual features attend to the prompt features
(cross-attention, residual). transformers' `DeformableDetrModel` with M queries then turns the language-aware
scales into M image tokens, each an embedding `e_i` and a location `l_i` (its centre). Loss: class-agnostic
focal loss on objectness and L1 on the centres of the queries matched to objects (Hungarian, scipy).

This file ships with every v1 checkpoint (``trust_remote_code``): it imports only torch, torchvision, scipy and
transformers.
"""

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import sigmoid_focal_loss
from transformers import BertModel, DeformableDetrModel


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class LanguageInjectedBackbone(nn.Module):
    """Deformable DETR's backbone with the prompt features added into each scale by cross-attention."""

    def __init__(self, backbone: nn.Module, text_width: int):
        super().__init__()
        self.backbone = backbone
        self.intermediate_channel_sizes = backbone.intermediate_channel_sizes
        channels = list(self.intermediate_channel_sizes)
        self.text_projections = nn.ModuleList(nn.Linear(text_width, width) for width in channels)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for width in channels)
        self.cross_attentions = nn.ModuleList(
            nn.MultiheadAttention(width, 8 if width % 8 == 0 else 1, batch_first=True) for width in channels
        )
        self.prompt = None  # (features, attention mask), set by the tokenizer around each call

    @property
    def model(self) -> nn.Module:  # Deformable DETR's freeze_backbone reaches for it
        return self.backbone.model

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> list:
        if self.prompt is None:
            raise ValueError("the language-guided backbone runs inside LanguageGuidedImageTokenizer only")
        text, text_mask = self.prompt
        scales = []
        for level, (feature_map, mask) in enumerate(self.backbone(pixel_values, pixel_mask)):
            batch, width, height, breadth = feature_map.shape
            flat = feature_map.flatten(2).transpose(1, 2)
            keys = self.text_projections[level](text.to(flat.dtype))
            attended, _ = self.cross_attentions[level](
                self.norms[level](flat), keys, keys, key_padding_mask=~text_mask.bool(), need_weights=False
            )
            scales.append(((flat + attended).transpose(1, 2).reshape(batch, width, height, breadth), mask))
        return scales


class LanguageGuidedImageTokenizer(nn.Module):
    """
    Arguments:
        detector_config (`DeformableDetrConfig`): its `num_queries` is M, the image tokens per image.
        prompt_encoder_config (`BertConfig`): the prompt encoder.
    """

    def __init__(self, *, detector_config, prompt_encoder_config):
        super().__init__()
        self.prompt_encoder = BertModel(prompt_encoder_config, add_pooling_layer=False)
        self.detector = DeformableDetrModel(detector_config)
        self.detector.backbone = LanguageInjectedBackbone(self.detector.backbone, prompt_encoder_config.hidden_size)
        width = detector_config.d_model
        self.objectness = nn.Linear(width, 1)
        self.centre = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, pixel_values, prompt_input_ids, prompt_attention_mask) -> tuple[torch.Tensor, ...]:
        """
        Returns:
            `(embeddings (b, M, d), centres (b, M, 2) normalised xy, objectness logits (b, M))`.
        """
        text = self.prompt_encoder(input_ids=prompt_input_ids, attention_mask=prompt_attention_mask).last_hidden_state
        self.detector.backbone.prompt = (text, prompt_attention_mask)
        try:
            output = self.detector(pixel_values=pixel_values)
        finally:
            self.detector.backbone.prompt = None
        states = output.last_hidden_state
        reference = output.intermediate_reference_points[:, -1, :, :2]
        centres = (self.centre(states) + inverse_sigmoid(reference)).sigmoid()
        return states, centres, self.objectness(states)[..., 0]

    @staticmethod
    def loss(centres: torch.Tensor, objectness: torch.Tensor, target_centres: list[torch.Tensor]) -> torch.Tensor:
        """Class-agnostic focal loss + L1 on the centres of the queries matched to each image's objects."""
        labels = torch.zeros_like(objectness)
        l1_terms = []
        for row, targets in enumerate(target_centres):
            targets = targets.to(centres)
            if not len(targets):
                continue
            cost = torch.cdist(centres[row].detach().float(), targets.float(), p=1) - objectness[row].detach().sigmoid()[:, None]
            queries, objects = linear_sum_assignment(cost.cpu().numpy())
            labels[row, queries] = 1.0
            l1_terms.append((centres[row, queries] - targets[objects]).abs().sum(-1))
        count = max(1, sum(len(t) for t in target_centres))
        focal = sigmoid_focal_loss(objectness, labels, reduction="sum") / count
        l1 = torch.cat(l1_terms).sum() / count if l1_terms else centres.sum() * 0.0
        return focal + l1


__all__ = ["LanguageGuidedImageTokenizer", "LanguageInjectedBackbone"]
