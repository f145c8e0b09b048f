"""REC precision@IoU as an `evaluate` metric: `evaluate.load(path_to_this_file)`.

predictions / references: xyxy boxes (a prediction may be empty for "no box"). Returns `precision@0.5`."""

import datasets
import evaluate

from visionllm_hf.evaluation.metrics import precision_at_iou


class ReferringPrecision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of referring expressions whose predicted box has IoU >= threshold with the target.",
            citation="", inputs_description="predictions, references: lists of xyxy boxes",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")),
                                        "references": datasets.Sequence(datasets.Value("float32"))}),
        )

    def _compute(self, predictions, references, threshold: float = 0.5):
        boxes = [list(p) if len(p) == 4 else None for p in predictions]
        return {f"precision@{threshold}": precision_at_iou(boxes, [list(r) for r in references], threshold)}
