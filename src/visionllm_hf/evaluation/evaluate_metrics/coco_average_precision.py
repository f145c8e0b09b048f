"""COCO AP (pycocotools) for boxes, masks or keypoints as an `evaluate` metric.

predictions: COCO result dicts as JSON strings; references: one COCO ground-truth JSON string (repeat it per
prediction, or pass `ground_truth=` to `compute`). `iou_type` is `bbox`, `segm` or `keypoints`."""

import contextlib
import io
import json

import datasets
import evaluate
from pycocotools.coco import COCO

from visionllm_hf.evaluation.metrics import coco_average_precision


class CocoAveragePrecision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="COCO average precision (0.50:0.95) and AP50 through pycocotools' COCOeval.",
            citation="", inputs_description="predictions: JSON result dicts; references: the ground-truth JSON",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, iou_type: str = "bbox", keypoint_sigmas=None):
        coco = COCO()
        with contextlib.redirect_stdout(io.StringIO()):
            coco.dataset = json.loads(references[0])
            coco.createIndex()
        results = [json.loads(p) for p in predictions]
        return coco_average_precision(coco, results, iou_type, keypoint_sigmas=keypoint_sigmas)
