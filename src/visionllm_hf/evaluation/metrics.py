"""Metrics, each from the maintained implementation: COCO AP (pycocotools), BLEU-4 and CIDEr (pycocoevalcap),
and the simple referring / counting scores computed with torchvision's box IoU."""

import contextlib
import io
import re

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou


def coco_average_precision(
    ground_truth: COCO,
    results: list[dict],
    iou_type: str,
    keypoint_sigmas: list[float] | None = None,
    category_ids: list[int] | None = None,
    image_ids: list | None = None,
    use_categories: bool = True,
) -> dict[str, float]:
    """
    COCOeval over `results` (COCO result format: `bbox` xywh, `segmentation` RLE or `keypoints`, `score`,
    `category_id`, `image_id`), over `category_ids` only when given, and over `image_ids` (default: every image
    of `ground_truth`, so an image without results counts its missed objects). `use_categories=False` is
    COCOeval's class-agnostic mode (`params.useCats = 0`): a box counts for any object it covers, whatever
    category it names. Returns `AP` (0.50:0.95) and `AP50`; zeros when there are no results.
    """
    if not results:
        return {"AP": 0.0, "AP50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        predictions = ground_truth.loadRes(results)
        evaluator = COCOeval(ground_truth, predictions, iou_type)
        evaluator.params.imgIds = sorted(ground_truth.getImgIds() if image_ids is None else image_ids)
        if category_ids is not None:
            evaluator.params.catIds = list(category_ids)
        evaluator.params.useCats = int(use_categories)
        if keypoint_sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(keypoint_sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"AP": max(float(evaluator.stats[0]), 0.0), "AP50": max(float(evaluator.stats[1]), 0.0)}


def precision_at_iou(predicted_boxes: list, target_boxes: list, threshold: float = 0.5) -> float:
    """Share of predictions (xyxy, one per target, None for no prediction) whose IoU with the target >= threshold."""
    if not target_boxes:
        return 0.0
    hits = 0
    for predicted, target in zip(predicted_boxes, target_boxes):
        if predicted is not None:
            iou = box_iou(torch.tensor([predicted], dtype=torch.float32), torch.tensor([target], dtype=torch.float32))
            hits += int(iou.item() >= threshold)
    return hits / len(target_boxes)


def cumulative_iou(predicted_masks: list, target_masks: list) -> float:
    """cIoU: total intersection over total union across all samples (the RES metric)."""
    intersection = union = 0
    for predicted, target in zip(predicted_masks, target_masks):
        target = np.asarray(target, dtype=bool)
        predicted = np.zeros_like(target) if predicted is None else np.asarray(predicted, dtype=bool)
        intersection += int((predicted & target).sum())
        union += int((predicted | target).sum())
    return intersection / union if union else 0.0


def accuracy(predictions: list, references: list) -> float:
    return sum(p == r for p, r in zip(predictions, references)) / len(references) if references else 0.0


def normalise_answer(text: str) -> str:
    """Lower case, punctuation and surrounding spaces removed."""
    return re.sub(r"[^\w\s]", "", text.lower()).strip()


def exact_match(predictions: list[str], references: list[str]) -> float:
    return accuracy([normalise_answer(p) for p in predictions], [normalise_answer(r) for r in references])


def caption_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU-4 and CIDEr (pycocoevalcap) on lower-cased, punctuation-free, space-split captions."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if not predictions:
        return {"BLEU-4": 0.0, "CIDEr": 0.0}
    candidates = {i: [normalise_answer(p) or "empty"] for i, p in enumerate(predictions)}
    truths = {i: [normalise_answer(r) for r in refs] for i, refs in enumerate(references)}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(truths, candidates)
        cider, _ = Cider().compute_score(truths, candidates)
    return {"BLEU-4": float(bleu[3]), "CIDEr": float(cider)}


__all__ = [
    "accuracy",
    "caption_scores",
    "coco_average_precision",
    "cumulative_iou",
    "exact_match",
    "normalise_answer",
    "precision_at_iou",
]
