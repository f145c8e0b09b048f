"""Metrics against values known by construction, the evaluate modules, and the eval runner end to end."""

import json
from pathlib import Path

import evaluate
import numpy as np
import pytest
from pycocotools.coco import COCO

from visionllm_hf.builder import build_demo
from visionllm_hf.evaluation import Evaluator
from visionllm_hf.evaluation.metrics import (
    caption_scores,
    coco_average_precision,
    cumulative_iou,
    exact_match,
    precision_at_iou,
)
from visionllm_hf.synthetic import write_dataset

MODULES = Path(__file__).parents[1] / "src" / "visionllm_hf" / "evaluation" / "evaluate_metrics"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synthetic"), num_images=4, seed=9)


def ground_truth_results(coco: COCO, iou_type: str) -> list[dict]:
    results = []
    for annotation in coco.loadAnns(coco.getAnnIds()):
        result = {"image_id": annotation["image_id"], "category_id": annotation["category_id"], "score": 1.0}
        result.update({"bbox": annotation["bbox"]} if iou_type == "bbox" else
                      {"segmentation": annotation["segmentation"]} if iou_type == "segm" else
                      {"keypoints": annotation["keypoints"]})
        results.append(result)
    return results


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_perfect_predictions_score_one_and_shifted_boxes_score_zero(synthetic, iou_type):
    coco = COCO(str(synthetic["instances"]))
    sigmas = [0.05] * 5 if iou_type == "keypoints" else None
    assert coco_average_precision(coco, ground_truth_results(coco, iou_type), iou_type, sigmas)["AP"] == pytest.approx(1.0)
    if iou_type == "bbox":
        shifted = [{**r, "bbox": [r["bbox"][0] + 200, *r["bbox"][1:]]} for r in ground_truth_results(coco, "bbox")]
        assert coco_average_precision(coco, shifted, "bbox")["AP50"] == 0.0


def test_simple_scores():
    assert precision_at_iou([[0, 0, 10, 10], [0, 0, 10, 10], None], [[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 1, 1]]) == pytest.approx(1 / 3)
    half = np.zeros((4, 4), dtype=bool)
    half[:2] = True
    assert cumulative_iou([half, half], [np.ones((4, 4)), half]) == pytest.approx((8 + 8) / (16 + 8))
    assert exact_match(["3.", "Two"], ["3", "2"]) == 0.5
    caption = "there is a large red circle and a small blue square"
    assert caption_scores([caption], [[caption]])["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert caption_scores(["green triangles everywhere tonight"], [[caption]])["BLEU-4"] < 0.01


def test_evaluate_modules_load_offline_and_agree():
    rec = evaluate.load(str(MODULES / "referring_precision.py"))
    assert rec.compute(predictions=[[0, 0, 10, 10], [0, 0, 2, 2]], references=[[0, 0, 10, 10], [5, 5, 9, 9]]) == {"precision@0.5": 0.5}
    counting = evaluate.load(str(MODULES / "answer_exact_match.py"))
    assert counting.compute(predictions=["3", "four"], references=["3.", "4"]) == {"exact_match": 0.5}
    ciou = evaluate.load(str(MODULES / "cumulative_iou.py"))
    assert ciou.compute(predictions=[[[1, 1], [0, 0]]], references=[[[1, 0], [0, 0]]]) == {"cIoU": 0.5}
    captions = evaluate.load(str(MODULES / "caption_scores.py"))
    scores = captions.compute(predictions=["there is a large red circle and a small blue square"],
                              references=[["there is a large red circle and a small blue square"]])
    assert scores["BLEU-4"] == pytest.approx(1.0, abs=1e-6)


def test_coco_module_matches_the_function(synthetic):
    ground_truth = synthetic["instances"].read_text()
    coco = COCO(str(synthetic["instances"]))
    results = ground_truth_results(coco, "bbox")
    module = evaluate.load(str(MODULES / "coco_average_precision.py"))
    scores = module.compute(predictions=[json.dumps(r) for r in results], references=[ground_truth] * len(results))
    assert scores["AP"] == pytest.approx(1.0)


def test_evaluator_runs_every_task_on_a_demo_size_model(synthetic):
    model, processor = build_demo(seed=0)  # predicts the synthetic shapes' 5 keypoints
    metrics = Evaluator(model, processor, str(synthetic["root"]), max_images=2, batch_size=4, progress=False).run()
    expected = {"detection AP50", "mask AP50", "keypoint AP", "REC P@0.5", "REC P@0.5 <LOC>", "RES cIoU",
                "interactive segmentation cIoU",
                "region classification accuracy", "counting exact match", "caption BLEU-4", "caption CIDEr"}
    assert expected <= set(metrics)
    assert all(0.0 <= value for value in metrics.values())
