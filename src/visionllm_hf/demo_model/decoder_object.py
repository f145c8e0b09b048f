"""`[DET]` object decoder: transformers' Grounding DINO whose text comes from the LLM, plus a mask head.

VisionLLM v2 (paper 002, section 3.2) drops Grounding DINO's BERT text encoder: the "text" is one feature per
category, the super-link queries of that category's routing token pooled into one embedding ("person [DET],
car [DET]" -> two categories) and standardised per feature dimension (see `standardise_categories`). Here the
categories are laid out as Grounding DINO expects a caption, `[CLS] c1 . c2 . ... [SEP]`, with the category
features at the `c` positions (zeros elsewhere), so its own cross-modal encoder, query selection and
contrastive class head run unchanged. A mask head (query embedding x
per-pixel embedding of the backbone's finest level, MaskDINO style) gives instance masks for detection,
instance segmentation, grounding and interactive segmentation.

Training matches predictions to targets per image with scipy's Hungarian solver (focal class cost, L1 and
GIoU box costs, Grounding DINO's weights) and sums sigmoid focal, L1, GIoU, mask BCE and Dice losses. As in
Grounding DINO's training, every earlier decoder layer and the encoder's selected proposals (two-stage query
selection) get the same class and box losses, each matched on its own (`det_aux_*`): without the encoder term
the proposal heads that choose the queries' starting boxes would never learn. When targets name their category
(the training data sources do), `det_category` keeps the encoded category features of different names apart.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch, torchvision, scipy and
transformers.
"""

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou, generalized_box_iou_loss, sigmoid_focal_loss
from transformers import GroundingDinoForObjectDetection, PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutput

from .decoder_mask import dice_loss

CLS, SEP, DOT, CATEGORY = 101, 102, 1012, 1000  # BERT ids Grounding DINO reads as caption structure


class InjectedText(nn.Module):
    """Stands in for Grounding DINO's text backbone: returns the category features set just before the call."""

    def __init__(self):
        super().__init__()
        self.features = None

    def forward(self, input_ids, *args, **kwargs) -> BaseModelOutput:
        if self.features is None or self.features.shape[:2] != input_ids.shape:
            raise RuntimeError("category features must be injected before running the detector")
        return BaseModelOutput(last_hidden_state=self.features)


class ObjectDecoder(nn.Module):
    """
    Arguments:
        detector_config (`GroundingDinoConfig`): config of the detector (backbone, encoder, decoder, queries).
        max_detections (`int`, defaults to 100): most boxes returned per category.
    """

    needs_image = True

    def __init__(self, *, detector_config: PreTrainedConfig, max_detections: int = 100):
        super().__init__()
        self.detector = GroundingDinoForObjectDetection(detector_config)
        self.detector.model.text_backbone = InjectedText()
        self.detector.model.text_projection = nn.Identity()
        width = detector_config.d_model
        self.input_width = width
        self.max_detections = max_detections
        finest_channels = self.detector.model.backbone.conv_encoder.intermediate_channel_sizes[0]
        self.pixel_embed = nn.Conv2d(finest_channels, width, kernel_size=1)
        self.category_norm = nn.BatchNorm1d(width, affine=False)
        self.mask_embed = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        self.costs = {
            "class": detector_config.class_cost,
            "l1": detector_config.bbox_cost,
            "giou": detector_config.giou_cost,
        }
        self.focal_alpha = detector_config.focal_alpha

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The detector reads the image jointly with the categories, so images pass through unchanged."""
        return pixel_values

    def forward(self, prompts: torch.Tensor, image_features: torch.Tensor, rows: torch.LongTensor) -> dict:
        """
        Args:
            prompts (`(occurrences, tokens, width)`): projected super-link states, one category per occurrence.
            image_features (`(images, 3, size, size)`): decoder images.
            rows (`(occurrences,)`): each occurrence's image.

        Returns:
            dict with, per image, `logits` `(images, queries, max_categories)` (category scores, -inf where an
            image has fewer categories), `boxes` `(images, queries, 4)` normalised cxcywh, `mask_logits`
            `(images, queries, h, w)`, and `category_slot` `(occurrences,)`, each occurrence's category index.
        """
        categories = self.standardise_categories(prompts.mean(dim=1))
        slots = torch.zeros_like(rows)
        for image in rows.unique():
            selected = rows == image
            slots[selected] = torch.arange(int(selected.sum()), device=rows.device)
        num_images, max_categories = len(image_features), int(slots.max()) + 1
        input_ids, attention_mask, features = self._caption(categories, rows, slots, num_images, max_categories)

        finest = {}
        hook = self.detector.model.backbone.register_forward_hook(
            lambda module, args, output: finest.update(map=output[0][0][0])  # (levels, positions)[0] = (map, mask)
        )
        self.detector.model.text_backbone.features = features.to(image_features.dtype)
        try:
            output = self.detector(
                pixel_values=image_features, input_ids=input_ids, attention_mask=attention_mask, return_dict=True
            )
        finally:
            self.detector.model.text_backbone.features = None
            hook.remove()
        positions = 1 + 2 * torch.arange(max_categories, device=rows.device)
        logits = output.logits[:, :, positions]
        present = torch.zeros(num_images, max_categories, dtype=torch.bool, device=rows.device)
        present[rows, slots] = True
        logits = logits.masked_fill(~present[:, None, :], -float("inf"))
        auxiliary = [
            {"logits": layer_logits[:, :, positions].masked_fill(~present[:, None, :], -float("inf")), "boxes": boxes}
            for layer_logits, boxes in self._auxiliary_predictions(output, attention_mask)
        ]
        pixel = self.pixel_embed(finest["map"])
        mask_logits = torch.einsum("bqd,bdhw->bqhw", self.mask_embed(output.last_hidden_state), pixel)
        return {
            "logits": logits,
            "boxes": output.pred_boxes,
            "mask_logits": mask_logits,
            "category_slot": slots,
            "rows": rows,
            "query_states": output.last_hidden_state,
            "category_text": output.encoder_last_hidden_state_text[rows, 1 + 2 * slots],
            "pixel_embeddings": pixel,
            "auxiliary": auxiliary,
        }

    def standardise_categories(self, categories: torch.Tensor) -> torch.Tensor:
        """
        Each feature dimension standardised (batch statistics while training with two or more categories, the
        running ones otherwise). The pooled features of different categories share a large common component and,
        from an untrained LLM, differ more by their place in the answer than by their name; without this the
        detector's focal loss pulls them together (one "objectness" direction) and its class head never sees
        which category is which.
        """
        norm, features = self.category_norm, categories.float()
        if self.training and len(categories) > 1:
            return norm(features).to(categories.dtype)
        running_mean, running_var = norm.running_mean.float(), norm.running_var.float()  # bf16 / fp16 checkpoints
        standardised = F.batch_norm(features, running_mean, running_var, training=False, eps=norm.eps)
        return standardised.to(categories.dtype)

    def _auxiliary_predictions(self, output, attention_mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Caption-position logits and boxes of each decoder layer before the last (from Grounding DINO's own class
        and box heads, as its forward applies them), then of the encoder proposals it selected as queries.
        """
        detector, text_mask = self.detector, attention_mask.bool()
        text = output.encoder_last_hidden_state_text
        hidden, references = output.intermediate_hidden_states, output.intermediate_reference_points
        predictions = []
        for level in range(hidden.shape[1] - 1):
            reference = output.init_reference_points if level == 0 else references[:, level - 1]
            logits = detector.class_embed[level](
                vision_hidden_state=hidden[:, level], text_hidden_state=text, text_token_mask=text_mask
            )
            box_logits = detector.bbox_embed[level](hidden[:, level]) + torch.special.logit(reference, eps=1e-5)
            predictions.append((logits, box_logits.sigmoid()))
        if output.enc_outputs_class is not None:  # two-stage: the top-scoring encoder positions became the queries
            selected = output.enc_outputs_class.max(dim=-1).values.topk(hidden.shape[2], dim=1).indices[..., None]
            logits = output.enc_outputs_class.gather(1, selected.expand(-1, -1, output.enc_outputs_class.shape[-1]))
            box_logits = output.enc_outputs_coord_logits.gather(1, selected.expand(-1, -1, 4))
            predictions.append((logits, box_logits.sigmoid()))
        return predictions

    def _caption(self, categories, rows, slots, num_images: int, max_categories: int):
        """`[CLS] c1 . c2 . ... [SEP]` ids, mask and features per image (category features at the `c` slots)."""
        length = 2 * max_categories + 2
        input_ids = torch.full((num_images, length), DOT, dtype=torch.long, device=rows.device)
        input_ids[:, 0] = CLS
        input_ids[:, 1 : 2 * max_categories : 2] = CATEGORY
        input_ids[:, -1] = SEP
        attention_mask = torch.zeros(num_images, length, dtype=torch.long, device=rows.device)
        counts = torch.bincount(rows, minlength=num_images)
        for image, count in enumerate(counts.tolist()):
            attention_mask[image, : 2 * count + 1] = 1
            attention_mask[image, -1] = 1
        features = categories.new_zeros(num_images, length, categories.shape[-1])
        features[rows, 1 + 2 * slots] = categories
        return input_ids, attention_mask, features

    def compute_loss(self, predictions: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """
        `targets`, one per occurrence: `{"boxes": (n, 4) normalised xyxy, "masks": (n, h, w), optional}`, all
        instances of that occurrence's category in its image (n may be 0).
        """
        losses = self.detection_losses(predictions, self.match(predictions, targets))
        losses["det_category"] = self.category_loss(predictions["category_text"], targets)
        return {**losses, **self.auxiliary_losses(predictions, targets)}

    def category_loss(self, category_text: torch.Tensor, targets: list[dict], temperature: float = 0.1) -> torch.Tensor:
        """
        Keeps categories apart where the class head reads them: each occurrence's encoded category feature is
        classified among the batch's category names by cosine to each name's mean feature (cross-entropy).
        Targets name their category under `"category"`; with fewer than two names in the batch the term is 0.
        """
        names = [target.get("category") for target in targets]
        if None in names or len(set(names)) < 2:
            return category_text.sum() * 0.0
        vocabulary = sorted(set(names))
        labels = torch.tensor([vocabulary.index(name) for name in names], device=category_text.device)
        features = F.normalize(category_text.float(), dim=-1)
        one_hot = F.one_hot(labels, len(vocabulary)).to(features)
        prototypes = F.normalize(one_hot.T @ features, dim=-1)
        return F.cross_entropy(features @ prototypes.T / temperature, labels)

    def auxiliary_losses(self, predictions: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """`det_aux_class`, `det_aux_l1`, `det_aux_giou`: summed over the earlier layers and the encoder proposals."""
        totals = {}
        for auxiliary in predictions.get("auxiliary", []):
            layer = {**predictions, **auxiliary}
            for name, value in self.class_and_box_losses(layer, self.match(layer, targets)).items():
                key = name.replace("det_", "det_aux_")
                totals[key] = totals.get(key, 0) + value
        return totals

    def match(self, predictions: dict, targets: list[dict]) -> list[dict]:
        """Per image with targets: matched `query` and `target` indices and the image's gathered targets."""
        logits, boxes = predictions["logits"], predictions["boxes"]
        rows, slots = predictions["rows"].tolist(), predictions["category_slot"].tolist()
        matches = []
        for image in range(len(logits)):
            entries = [(slot, target) for row, slot, target in zip(rows, slots, targets) if row == image]
            labels = [torch.full((len(t["boxes"]),), slot, dtype=torch.long) for slot, t in entries]
            if not entries or not sum(len(label) for label in labels):
                continue
            labels = torch.cat(labels).to(logits.device)
            gt_boxes = torch.cat([torch.as_tensor(t["boxes"], dtype=boxes.dtype).view(-1, 4) for _, t in entries])
            query, target = self._match(logits[image], boxes[image], labels, gt_boxes.to(boxes.device))
            gathered = {"labels": labels, "boxes": gt_boxes.to(boxes.device)}
            for key in ("masks", "keypoints"):
                if all(key in t for _, t in entries):
                    gathered[key] = torch.cat([torch.as_tensor(t[key], dtype=torch.float32) for _, t in entries])
            matches.append({"image": image, "query": query, "target": target, **gathered})
        return matches

    def detection_losses(self, predictions: dict, matches: list[dict]) -> dict[str, torch.Tensor]:
        """Class, box and mask losses of the final layer's matched predictions."""
        losses = self.class_and_box_losses(predictions, matches)
        mask_logits = predictions["mask_logits"]
        with_masks = [m for m in matches if "masks" in m]
        if with_masks:
            size = mask_logits.shape[-2:]
            predicted_masks = torch.cat([mask_logits[m["image"], m["query"]] for m in with_masks])
            masks = torch.cat(
                [F.interpolate(m["masks"][m["target"]][:, None], size=size, mode="bilinear")[:, 0] for m in with_masks]
            ).round().to(predicted_masks)
            losses["det_mask_bce"] = F.binary_cross_entropy_with_logits(predicted_masks, masks)
            losses["det_mask_dice"] = dice_loss(predicted_masks, masks)
        else:
            losses["det_mask_bce"] = losses["det_mask_dice"] = mask_logits.sum() * 0.0
        return losses

    def class_and_box_losses(self, predictions: dict, matches: list[dict]) -> dict[str, torch.Tensor]:
        """Sigmoid focal loss over every query and category; L1 and GIoU of the matched boxes."""
        logits, boxes = predictions["logits"], predictions["boxes"]
        class_targets = torch.zeros_like(logits)
        for match in matches:
            class_targets[match["image"], match["query"], match["labels"][match["target"]]] = 1.0
        num_boxes = max(sum(len(match["target"]) for match in matches), 1)
        finite = torch.isfinite(logits)
        focal = sigmoid_focal_loss(logits[finite], class_targets[finite], alpha=self.focal_alpha, reduction="sum")
        losses = {"det_class": focal / num_boxes}
        if matches:
            predicted = torch.cat([boxes[m["image"], m["query"]] for m in matches])
            target = torch.cat([m["boxes"][m["target"]] for m in matches])
            predicted_xyxy = box_convert(predicted, "cxcywh", "xyxy")
            losses["det_l1"] = F.l1_loss(predicted_xyxy, target, reduction="sum") / num_boxes
            losses["det_giou"] = generalized_box_iou_loss(predicted_xyxy, target, reduction="sum") / num_boxes
        else:  # no instance anywhere: keep the box head in the graph with zero-valued terms
            losses["det_l1"] = losses["det_giou"] = boxes.sum() * 0.0
        return losses

    @torch.no_grad()
    def _match(self, logits, boxes, labels, gt_boxes) -> tuple[torch.Tensor, torch.Tensor]:
        """Hungarian matching of one image's queries to its targets (scipy's `linear_sum_assignment`)."""
        probabilities = logits[:, labels].sigmoid()
        alpha, gamma = self.focal_alpha, 2.0
        positive = alpha * (1 - probabilities) ** gamma * -(probabilities + 1e-8).log()
        negative = (1 - alpha) * probabilities**gamma * -(1 - probabilities + 1e-8).log()
        predicted = box_convert(boxes, "cxcywh", "xyxy")
        cost = (
            self.costs["class"] * (positive - negative)
            + self.costs["l1"] * torch.cdist(predicted, gt_boxes, p=1)
            - self.costs["giou"] * generalized_box_iou(predicted, gt_boxes)
        )
        query, target = linear_sum_assignment(cost.float().cpu().numpy())
        return torch.as_tensor(query, device=logits.device), torch.as_tensor(target, device=logits.device)

    def results(self, predictions: dict) -> list[dict]:
        """Per occurrence, the queries whose best category it is, best first: boxes (xyxy), scores, masks."""
        logits, boxes, masks = predictions["logits"], predictions["boxes"], predictions["mask_logits"]
        scores, best = logits.sigmoid().max(dim=-1)
        results = []
        for row, slot in zip(predictions["rows"].tolist(), predictions["category_slot"].tolist()):
            mine = (best[row] == slot).nonzero()[:, 0]
            kept = mine[scores[row, mine].argsort(descending=True)[: self.max_detections]]
            results.append(
                {
                    "boxes": box_convert(boxes[row, kept], "cxcywh", "xyxy").clamp(0, 1),
                    "scores": scores[row, kept],
                    "masks": masks[row, kept].sigmoid(),
                    "queries": kept,
                }
            )
        return results


__all__ = ["InjectedText", "ObjectDecoder"]
