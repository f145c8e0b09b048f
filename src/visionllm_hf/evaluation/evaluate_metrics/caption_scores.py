"""Caption BLEU-4 and CIDEr (pycocoevalcap) as an `evaluate` metric: `evaluate.load(path_to_this_file)`."""

import datasets
import evaluate

from visionllm_hf.evaluation.metrics import caption_scores


class CaptionScores(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="BLEU-4 and CIDEr of generated captions against one or more references (pycocoevalcap).",
            citation="", inputs_description="predictions: strings; references: lists of strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references):
        return caption_scores(predictions, [list(r) for r in references])
