"""Score the COCO results file `visionllm-hf predict` writes, without running a model.

`visionllm-hf eval --predictions predictions/ --data coco=instances.json,images=images/` scores box AP (and mask
AP where the results carry masks) from `predictions/coco_results.json` against the COCO file read for detection
(or instance segmentation), over the images the data holds: the same COCOeval call `eval` makes when it runs
the model itself. For AP, predict with every candidate (`--threshold 0 --nms-threshold 1`), as `eval` does.
"""

import json
from pathlib import Path

from ..prediction.outputs import COCO_RESULTS
from .data import EvaluationData
from .metrics import coco_average_precision
from .runner import CLASS_AGNOSTIC, DETECTION_METRICS, KEYPOINT_METRICS, MASK_METRICS


def read_coco_results(path: str | Path) -> tuple[Path, list[dict]]:
    """The results list of `coco_results.json` (or of the file given), checked for what COCOeval reads."""
    path = Path(path)
    if path.is_dir():
        path = path / COCO_RESULTS
    if not path.is_file():
        raise ValueError(f"--predictions {path}: no such file (give predict's --out folder or its {COCO_RESULTS})")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--predictions {path}: not JSON ({error})") from None
    if not isinstance(results, list):
        raise ValueError(f"--predictions {path}: a COCO results file is a JSON list, got {type(results).__name__}")
    for index, result in enumerate(results):
        missing = [key for key in ("image_id", "category_id", "score", "bbox") if key not in result]
        if missing:
            raise ValueError(f"--predictions {path}: result {index} has no {', '.join(missing)}")
    return path, results


def score_predictions(predictions: str | Path, data: EvaluationData) -> tuple[dict[str, float], dict[str, str]]:
    """`({metric: value}, {metric: why not scored})` of a predictions file against `data`'s COCO files."""
    path, results = read_coco_results(predictions)
    metrics, not_scored = {}, {}
    for task, names, iou_type in (("detection", DETECTION_METRICS, "bbox"),
                                  ("instance_segmentation", MASK_METRICS, "segm")):
        coco_data = data.coco.get(task)
        if coco_data is None:
            not_scored.update(dict.fromkeys(names, data.coco_skipped.get(task, "no COCO instances file")))
            continue
        images = set(coco_data.image_ids)
        scored = [r for r in results if r["image_id"] in images and (iou_type == "bbox" or "segmentation" in r)]
        if not scored:
            reason = (f"{path.name}: no result for the {len(images)} images of {coco_data.spec.path.name}"
                      if iou_type == "bbox" else f"{path.name}: no result has a mask ('segmentation')")
            not_scored.update(dict.fromkeys(names, reason))
            continue
        scored = [_for(iou_type, r) for r in scored]
        scores = coco_average_precision(coco_data.coco, scored, iou_type, image_ids=coco_data.image_ids)
        metrics.update(zip(names, (scores["AP"], scores["AP50"])))
        if iou_type == "bbox":
            metrics[CLASS_AGNOSTIC] = coco_average_precision(
                coco_data.coco, scored, iou_type, image_ids=coco_data.image_ids, use_categories=False)["AP50"]
    not_scored.update(dict.fromkeys(KEYPOINT_METRICS, "keypoints are scored by name when eval runs the model "
                                                      "(--model); a predictions file holds the model's order"))
    return {name: round(value, 4) for name, value in metrics.items()}, not_scored


def _for(iou_type: str, result: dict) -> dict:
    """The result as COCOeval reads it for `iou_type`: loadRes takes boxes or masks from whichever key is there."""
    if iou_type == "bbox":
        return {key: value for key, value in result.items() if key not in ("segmentation", "keypoints")}
    return {key: value for key, value in result.items() if key not in ("bbox", "keypoints")}
