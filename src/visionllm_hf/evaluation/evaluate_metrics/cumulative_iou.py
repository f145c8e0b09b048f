"""RES cumulative IoU as an `evaluate` metric: `evaluate.load(path_to_this_file)`.

predictions / references: binary masks as nested lists (height x width). Returns `cIoU`."""

import datasets
import evaluate

from visionllm_hf.evaluation.metrics import cumulative_iou


class CumulativeIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Total intersection over total union of predicted and target masks.",
            citation="", inputs_description="predictions, references: binary masks (lists of lists of 0/1)",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("uint8"))),
                                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint8")))}),
        )

    def _compute(self, predictions, references):
        return {"cIoU": cumulative_iou(predictions, references)}
