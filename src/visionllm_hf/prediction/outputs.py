"""The files `visionllm-hf predict` writes: JSON lines per image, COCO results, errors, pictures.

- `predictions.jsonl`: one line per image, in input order (`index`, `id`, `image`, `image_id`, `task`, `size`,
  `text`, `objects` with masks as COCO RLE, and transformers' detection schema `scores`, `labels`, `text_labels`,
  `boxes` as lists);
- `errors.jsonl`: one line per image that could not be read or predicted (`index`, `id`, `image`, `error`);
- `coco_results.json`: for detection, instance segmentation and pose, what `pycocotools.COCO.loadRes` takes;
- `images/`: annotated pictures (`save_picture`).

Each process appends to its own files (`predictions.rank{N}.jsonl` when there are several), flushed after every
batch, so a killed run loses at most the batch in flight; `PredictionFiles.merge` then writes the merged files in
input order.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from ..processing.post_processing import LABEL_TRIM
from ..visualization import draw_objects, draw_visual_prompts

PREDICTIONS = "predictions.jsonl"
ERRORS = "errors.jsonl"
COCO_RESULTS = "coco_results.json"
PICTURES = "images"
COCO_TASKS = ("detection", "instance_segmentation", "pose")


def mask_to_rle(mask) -> dict:
    """A boolean mask as COCO RLE with text counts (the results format)."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")}


def json_line(result: dict) -> dict:
    """A `predict` result as JSON: masks as RLE, tensors as lists (`id2label` is left out: `text_labels` says it)."""
    if "error" in result:
        return {key: result[key] for key in ("index", "id", "image", "image_id", "error")}
    objects = [
        {**obj, "mask": None if obj["mask"] is None else mask_to_rle(obj["mask"])} for obj in result["objects"]
    ]
    return {
        **{key: result[key] for key in ("index", "id", "image", "image_id", "task")},
        "size": list(result["size"]),
        "text": result["text"],
        "objects": objects,
        "scores": result["scores"].tolist(),
        "labels": result["labels"].tolist(),
        "text_labels": result["text_labels"],
        "boxes": result["boxes"].tolist(),
    }


def category_ids(names: list[str], coco_categories: list[dict] | None = None) -> dict[str, int]:
    """
    Label -> COCO category id: a COCO input's own ids, then 1, 2, ... (after its largest id) for every other name
    in order. Names are keyed as labels come out of post-processing (trimmed of spaces and punctuation).
    """
    ids = {category["name"].strip(LABEL_TRIM): category["id"] for category in coco_categories or []}
    next_id = max(ids.values(), default=0) + 1
    for name in names:
        key = str(name).strip(LABEL_TRIM)
        if key not in ids:
            ids[key] = next_id
            next_id += 1
    return ids


def coco_results(lines: list[dict], ids: dict[str, int]) -> list[dict]:
    """
    COCO results of the detection, instance segmentation and pose lines: `bbox` xywh, `segmentation` RLE when the
    object has a mask, flat `keypoints` with visibility 2 (visible) or 0; objects of other labels are left out.
    """
    results = []
    for line in lines:
        if line.get("task") not in COCO_TASKS:
            continue
        for obj in line["objects"]:
            if obj["box"] is None or obj["label"] not in ids:
                continue
            x1, y1, x2, y2 = obj["box"]
            entry = {"image_id": line["image_id"], "category_id": ids[obj["label"]],
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "score": obj["score"]}
            if obj["mask"] is not None:
                entry["segmentation"] = obj["mask"]
            if obj["keypoints"] is not None:
                entry["keypoints"] = [v for x, y, seen in obj["keypoints"] for v in (x, y, 2 if seen > 0.5 else 0)]
            results.append(entry)
    return results


def picture_name(result: dict) -> str:
    """`000012_photo.png`: the input position, then the image's name, so repeated images do not collide."""
    stem = re.sub(r"[^\w.-]+", "_", Path(str(result["id"])).stem)[:80]
    return f"{result['index']:06d}_{stem}.png"


def save_picture(result: dict, image, regions: list | None, folder: Path) -> Path:
    """
    Draw one result's objects and the visual prompts asked about onto its image; `[POSE]` objects without their
    masks, as the demo draws them (pose data has no masks to train the keypoint decoder's mask head).
    """
    drawn = [{**obj, "mask": None} if obj["routing"] == "[POSE]" else obj for obj in result["objects"]]
    picture = draw_visual_prompts(draw_objects(image, drawn), regions or [])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / picture_name(result)
    picture.save(path)
    return path


def read_lines(path: Path) -> list[dict]:
    """The JSON lines of a file that parse (a run killed mid-write may leave a partial last line)."""
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return lines


def write_lines(path: Path, lines: list[dict]):
    """Write JSON lines through a temporary file, so the file is whole or untouched."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(_dumps(line) + "\n" for line in lines))
    os.replace(temporary, path)


class PredictionFiles:
    """
    One process's prediction and error files under `out`, and the merge into `predictions.jsonl` and
    `errors.jsonl`.

    Arguments:
        out (`Path`): the output folder.
        rank (`int`), world_size (`int`): this process and how many there are; one process writes the merged
            names directly.
    """

    def __init__(self, out: Path, rank: int = 0, world_size: int = 1):
        self.out, self.rank, self.world_size = Path(out), rank, world_size
        suffix = "" if world_size == 1 else f".rank{rank}"
        self.predictions = self.out / f"predictions{suffix}.jsonl"
        self.errors = self.out / f"errors{suffix}.jsonl"

    def start(self, resume: bool):
        """
        Make this process's files ready: with `resume`, its predictions keep every whole line; else they start
        empty. Errors always start empty (failed images are tried again). The main process also removes what the
        end of the run rebuilds and, without `resume`, the files of earlier runs with more processes.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        write_lines(self.predictions, read_lines(self.predictions) if resume else [])
        write_lines(self.errors, [])
        if self.rank != 0:
            return
        stale = [self.out / COCO_RESULTS] + [p for p in self._shards("errors") if p != self.errors]
        if self.world_size > 1:
            stale.append(self.out / ERRORS)
            if not resume:
                stale.append(self.out / PREDICTIONS)
        if not resume:
            stale += [p for p in self._shards("predictions") if p != self.predictions]
        for path in stale:
            path.unlink(missing_ok=True)

    def done_indices(self) -> set[int]:
        """Input positions already predicted, in the merged file or any process's file."""
        paths = {self.out / PREDICTIONS, *self._shards("predictions")}
        return {line["index"] for path in paths for line in read_lines(path)}

    def append(self, batch: list[dict]):
        """Append one batch's results and errors, flushed, so they survive the process being killed."""
        for path, lines in ((self.predictions, [r for r in batch if "error" not in r]),
                            (self.errors, [r for r in batch if "error" in r])):
            if lines:
                with path.open("a") as file:
                    file.write("".join(_dumps(json_line(line)) + "\n" for line in lines))
                    file.flush()

    def merge(self) -> tuple[list[dict], list[dict]]:
        """
        Merge every process's lines (and those of a resumed run) into `predictions.jsonl` and `errors.jsonl`, in
        input order, once per image; the per-process files are removed. Returns both lists.
        """
        merged = {}
        for path in [self.out / PREDICTIONS, *self._shards("predictions")]:
            for line in read_lines(path):
                merged.setdefault(line["index"], line)
        predictions = [merged[index] for index in sorted(merged)]
        errors = sorted((line for path in {self.out / ERRORS, *self._shards("errors")} for line in read_lines(path)
                         if line["index"] not in merged), key=lambda line: line["index"])
        write_lines(self.out / PREDICTIONS, predictions)
        write_lines(self.out / ERRORS, errors)
        for path in [*self._shards("predictions"), *self._shards("errors")]:
            path.unlink()
        return predictions, errors

    def _shards(self, name: str) -> list[Path]:
        return sorted(self.out.glob(f"{name}.rank*.jsonl"))


def _dumps(line: dict) -> str:
    return json.dumps(line, default=str)


__all__ = [
    "COCO_RESULTS",
    "COCO_TASKS",
    "ERRORS",
    "PICTURES",
    "PREDICTIONS",
    "PredictionFiles",
    "category_ids",
    "coco_results",
    "json_line",
    "mask_to_rle",
    "picture_name",
    "read_lines",
    "save_picture",
    "write_lines",
]
