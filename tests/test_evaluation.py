"""Metrics against values known by construction, the evaluate modules, and the eval runner end to end."""

import json
from pathlib import Path

import evaluate
import numpy as np
import pytest
from pycocotools.coco import COCO

from visionllm_hf.builder import build_demo
from visionllm_hf.evaluation import Evaluator, format_table
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


def test_class_agnostic_ap_scores_boxes_that_name_the_wrong_category(synthetic):
    coco = COCO(str(synthetic["instances"]))
    categories = sorted(coco.getCatIds())
    renamed = [{**r, "category_id": categories[(categories.index(r["category_id"]) + 1) % len(categories)]}
               for r in ground_truth_results(coco, "bbox")]  # every box exact, every category wrong
    assert coco_average_precision(coco, renamed, "bbox", use_categories=False)["AP50"] == pytest.approx(1.0)
    assert coco_average_precision(coco, renamed, "bbox")["AP50"] < 0.5
    right = ground_truth_results(coco, "bbox")
    assert coco_average_precision(coco, right, "bbox", use_categories=False)["AP50"] == pytest.approx(1.0)


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
    expected = {"detection AP50", "detection AP50 class-agnostic", "mask AP50", "keypoint AP", "REC P@0.5",
                "REC P@0.5 <LOC>", "RES cIoU", "interactive segmentation cIoU",
                "region classification accuracy", "counting exact match", "caption BLEU-4", "caption CIDEr"}
    reliance = {"region classification image reliance", "counting image reliance", "caption image reliance"}
    assert expected | reliance <= set(metrics)
    assert all(0.0 <= value for name, value in metrics.items() if name not in reliance)
    assert all(metrics[name] != 0 for name in reliance)  # a random model's answers still change with the image


# --- your data as it comes: specs, mask forms, counting without tags, pose categories, where results go -------


@pytest.fixture(scope="module")
def tiny_five_keypoints():
    """The tiny model with the synthetic shapes' 5 keypoint names (the tiny preset has COCO's 17)."""
    import copy

    import torch

    from visionllm_hf.builder import build_tiny
    from visionllm_hf.modeling import VisionLLMForConditionalGeneration
    from visionllm_hf.synthetic import KEYPOINTS

    model, processor = build_tiny(seed=0)
    config = copy.deepcopy(model.config)
    config.keypoint_names = list(KEYPOINTS)
    torch.manual_seed(0)
    return VisionLLMForConditionalGeneration(config).eval(), processor


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "d", num_images=3, seed=0)


def evaluate_on(model_and_processor, data, max_images=2) -> Evaluator:
    model, processor = model_and_processor
    evaluator = Evaluator(model, processor, data, max_images=max_images, batch_size=4, progress=False)
    evaluator.metrics = evaluator.run()
    return evaluator


def masks_in_other_forms(records: list[dict], images: Path) -> list[dict]:
    """The same masks as a PNG file, uncompressed RLE and one flat polygon (of the mask's box), in turn."""
    from pycocotools import mask as coco_mask
    from PIL import Image

    rewritten = []
    for index, record in enumerate(records):
        mask = coco_mask.decode(record["mask"])
        if index % 2 == 0:
            name = f"mask_{index}.png"
            Image.fromarray(mask * 255).save(images / name)
            record = {**record, "mask": name}
        else:
            pixels = mask.flatten(order="F").astype(int)
            changes = np.flatnonzero(np.diff(np.concatenate([[0], pixels, [1 - pixels[-1]]])))
            counts = np.diff(np.concatenate([[0], changes])).tolist()
            record = {**record, "mask": {"size": record["mask"]["size"], "counts": counts}}
        rewritten.append(record)
    return rewritten


def test_specs_with_a_renamed_referring_file_score_as_the_folder(tiny_five_keypoints, dataset):
    root, images = dataset["root"], dataset["images"]
    folder = evaluate_on(tiny_five_keypoints, str(root))
    records = [json.loads(line) for line in dataset["referring"].read_text().splitlines()]
    renamed = root / "my_refcoco_val.jsonl"
    renamed.write_text("\n".join(json.dumps(r) for r in masks_in_other_forms(records, images)))
    specs = [f"coco={dataset['instances']},images={images}", f"coco={dataset['captions']},images={images},task=caption",
             f"conversation={dataset['conversations']},images={images}", f"referring={renamed},images={images}"]
    renamed_specs = evaluate_on(tiny_five_keypoints, specs)
    assert renamed_specs.metrics == folder.metrics
    assert {"detection AP", "mask AP", "keypoint AP", "REC P@0.5", "RES cIoU", "interactive segmentation cIoU",
            "region classification accuracy", "counting exact match", "caption CIDEr"} <= set(folder.metrics)
    assert folder.not_scored == renamed_specs.not_scored == {}


def test_counting_is_inferred_without_tags_and_otherwise_not_scored(tiny, dataset):
    spec = f"conversation={dataset['conversations']},images={dataset['images']}"
    tagged = evaluate_on(tiny, [spec])
    records = json.loads(dataset["conversations"].read_text())
    assert any(r["task"] == "counting" for r in records)
    dataset["conversations"].write_text(json.dumps([{k: v for k, v in r.items() if k != "task"} for r in records]))
    inferred = evaluate_on(tiny, [spec])
    assert inferred.data.counting == tagged.data.counting and len(inferred.data.counting) >= 4
    assert inferred.metrics == tagged.metrics
    assert set(tagged.metrics) == {"counting exact match", "counting image reliance"}

    others = [r for r in records if "How many" not in r["conversations"][0]["value"]]
    dataset["conversations"].write_text(json.dumps(others))
    none = evaluate_on(tiny, [spec])
    assert "counting exact match" not in none.metrics
    assert "no counting question" in none.not_scored["counting exact match"]
    row = next(line for line in format_table(none.metrics, none.not_scored).splitlines() if "counting" in line)
    assert "not scored: no counting question" in row and "0.000" not in row


def test_pose_scores_the_categories_with_the_model_keypoints_and_says_which_it_skipped(tiny_five_keypoints, tiny,
                                                                                      dataset):
    data = json.loads(dataset["instances"].read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    present = [c for c in names if any(a["category_id"] == c for a in data["annotations"])]
    kept, bare, other = present[0], present[1], present[2]
    for category in data["categories"]:
        if category["id"] == bare:
            del category["keypoints"]
        if category["id"] == other:
            category["keypoints"] = ["tip", "tail", "middle"]
    for annotation in data["annotations"]:
        if annotation["category_id"] == bare:
            del annotation["keypoints"], annotation["num_keypoints"]
        if annotation["category_id"] == other:
            annotation["keypoints"] = annotation["keypoints"][:9]
            annotation["num_keypoints"] = 3
    pose_file = dataset["root"] / "shapes_keypoints.json"
    pose_file.write_text(json.dumps(data))
    spec = [f"coco={pose_file},images={dataset['images']},task=pose"]

    five = evaluate_on(tiny_five_keypoints, spec, max_images=None)
    assert set(five.metrics) == {"keypoint AP", "keypoint AP50"}
    skipped = five.not_scored["keypoint AP (skipped categories)"]
    assert f"'{names[bare]}'" in skipped and "no keypoints" in skipped
    assert f"'{names[other]}'" in skipped and "keypoints the model does not predict (tip, tail, middle)" in skipped
    assert f"'{names[kept]}'" not in skipped
    assert "read for task=pose only" in five.not_scored["detection AP"]

    seventeen = evaluate_on(tiny, spec, max_images=None)  # COCO's 17 keypoint names: no category has them
    assert "keypoint AP" not in seventeen.metrics
    assert "no category has keypoints the model predicts" in seventeen.not_scored["keypoint AP"]


def test_eval_checks_the_data_before_the_model_runs(tiny, dataset):
    from visionllm_hf.evaluation import EvaluationData
    from visionllm_hf.trainer.data_checks import DataError

    bad = dataset["root"] / "refs.jsonl"
    bad.write_text(json.dumps({"image": "00000.png", "expression": "the thing", "mask": "no_such_mask.png"}))
    with pytest.raises(DataError, match="no_such_mask.png"):
        EvaluationData([f"referring={bad},images={dataset['images']}"])
    with pytest.raises(ValueError, match="task=pose is not one"):
        EvaluationData([f"referring={bad},images={dataset['images']},task=pose"])


def test_cli_eval_writes_next_to_the_data_and_leaves_the_model_folder_alone(tiny_checkpoint, dataset, capsys):
    from visionllm_hf.cli import main

    before = {path.name: path.read_bytes() for path in Path(tiny_checkpoint).iterdir() if path.is_file()}
    assert main(["eval", "--model", str(tiny_checkpoint), "--data", str(dataset["root"]), "--max-images", "1"]) == 0
    after = {path.name: path.read_bytes() for path in Path(tiny_checkpoint).iterdir() if path.is_file()}
    assert after == before
    written = dataset["root"] / "eval_results.json"
    printed = capsys.readouterr().out
    assert f"written to {written}" in printed and "not scored" in printed  # the 17-keypoint model on 5-keypoint data
    metrics = json.loads(written.read_text())
    assert metrics and all(isinstance(value, float) for value in metrics.values())

    spec = f"conversation={dataset['conversations']},images={dataset['images']}"
    out = dataset["root"].parent / "elsewhere.json"
    assert main(["eval", "--model", str(tiny_checkpoint), "--data", spec, "--max-images", "1", "--out", str(out)]) == 0
    assert list(json.loads(out.read_text())) == ["counting exact match"]
