"""Evaluation: COCO AP for boxes, masks and keypoints, REC P@0.5, RES cIoU, region classification accuracy,
counting exact match, caption BLEU-4 and CIDEr."""

from .data import EvaluationData
from .forcing import ForcedAnswer
from .runner import GOALS, Evaluator, format_table

__all__ = ["GOALS", "EvaluationData", "Evaluator", "ForcedAnswer", "format_table"]
