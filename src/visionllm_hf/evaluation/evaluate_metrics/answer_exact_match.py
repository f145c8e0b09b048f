"""Exact match of short answers (counting, classification) as an `evaluate` metric.

Answers are compared lower-cased without punctuation. Returns `exact_match`."""

import datasets
import evaluate

from visionllm_hf.evaluation.metrics import exact_match


class AnswerExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of answers equal to the reference after lower-casing and dropping punctuation.",
            citation="", inputs_description="predictions, references: strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return {"exact_match": exact_match(predictions, references)}
