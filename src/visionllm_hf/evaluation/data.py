"""Evaluation data as users have it: the `--data` of `visionllm-hf eval`, read and checked before the model runs.

`--data` is a folder (the files `visionllm-hf synth` writes: `instances.json`, `captions.json`,
`conversations.json`, `referring.jsonl`, images in `images/`; those present are read) or one or more specs
`FORMAT=PATH[,images=DIR][,task=TASK]`, as `visionllm-hf train` takes them:

- `coco`: instances (detection; instance segmentation when every annotation has a `segmentation`; pose from the
  categories with keypoints) or captions (`task=caption`, or a file whose annotations have captions);
- `referring`: JSON lines `{"image", "expression", "box", "mask", "category"}` under any file name: REC from the
  boxes, RES and interactive segmentation from the masks, region classification from the categories;
- `conversation`: LLaVA-style JSON; its counting questions (tagged `"task": "counting"`, or asking "how many"
  with a whole-number answer; with `task=counting` every record).

`task=` limits a file to one task (`coco`'s `instance_segmentation` scores boxes too). Each file is checked by
`trainer/data_checks.py` for what it is read for. Each task is scored from the first COCO file read for it, and
from the records of every referring and conversation file.
"""

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from ..data_formats import decode_mask, is_counting_question, mask_form, question_and_answer
from ..trainer.data_checks import (
    check_coco,
    check_conversations,
    check_referring,
    raise_for_problems,
    read_json,
    read_json_lines,
)
from ..trainer.data_specs import split_data_spec  # the parsing and messages train uses

STANDARD_FILES = {  # the folder form: file name -> (format, task)
    "instances.json": ("coco", None),
    "captions.json": ("coco", "caption"),
    "conversations.json": ("conversation", None),
    "referring.jsonl": ("referring", None),
}
EVALUATION_TASKS = {  # format -> the tasks a spec's task= may name
    "coco": ("detection", "instance_segmentation", "pose", "caption"),
    "referring": ("rec", "grounding", "res", "interactive_segmentation", "region_classification"),
    "conversation": ("conversation", "counting"),
}
REFERRING_USES = {  # metric group -> whether a record serves it (when the spec names no task)
    "rec": lambda record: "box" in record,
    "res": lambda record: "mask" in record,
    "region_classification": lambda record: "category" in record and ("box" in record or "mask" in record),
}


@dataclass(frozen=True)
class EvaluationSpec:
    """One evaluation file: its format (`coco`, `referring`, `conversation`), path, image folder and task."""

    format: str
    path: Path
    images: Path
    task: str | None = None


def parse_evaluation_data(data) -> list[EvaluationSpec]:
    """`--data`: a folder, a spec `FORMAT=PATH[,images=DIR][,task=TASK]`, or a list of them -> the files to read."""
    entries = [data] if isinstance(data, (str, Path)) else list(data)
    if not entries:
        raise ValueError("give the evaluation data: a folder or FORMAT=PATH specs")
    specs = []
    for entry in entries:
        is_folder = Path(entry).is_dir() or "=" not in str(entry)
        specs += folder_specs(Path(entry)) if is_folder else [parse_evaluation_spec(str(entry))]
    return specs


def folder_specs(folder: Path) -> list[EvaluationSpec]:
    """The standard files present in `folder`, their images in `folder/images` (else in `folder`)."""
    if not folder.is_dir():
        raise ValueError(f"--data {folder}: no such folder, and not a spec FORMAT=PATH (coco=, referring=, "
                         "conversation=)")
    images = folder / "images" if (folder / "images").is_dir() else folder
    specs = [EvaluationSpec(kind, folder / name, images, task)
             for name, (kind, task) in STANDARD_FILES.items() if (folder / name).is_file()]
    if not specs:
        raise ValueError(f"--data {folder} holds none of {', '.join(STANDARD_FILES)}: give FORMAT=PATH specs for "
                         "files of other names")
    return specs


def parse_evaluation_spec(spec: str) -> EvaluationSpec:
    """`referring=refs.jsonl,images=DIR,task=res` -> an `EvaluationSpec` (images default to the file's folder)."""
    kind, path, settings = split_data_spec(spec)
    if kind not in EVALUATION_TASKS:
        raise ValueError(f"data spec '{spec}': eval reads {', '.join(EVALUATION_TASKS)} data, not {kind}")
    extra = sorted(set(settings) - {"images", "task"})
    if extra:
        raise ValueError(f"data spec '{spec}': eval takes images= and task= only, not '{extra[0]}'")
    task = settings.get("task")
    if task is not None and task not in EVALUATION_TASKS[kind]:
        raise ValueError(f"data spec '{spec}': task={task} is not one eval scores from {kind} data; choose from "
                         f"{', '.join(EVALUATION_TASKS[kind])}")
    images = Path(settings.get("images") or Path(path).parent)
    if not images.is_dir():
        raise ValueError(f"data spec '{spec}': the image folder {images} does not exist")
    return EvaluationSpec(kind, Path(path), images, task)


class EvaluationData:
    """
    Every file of `--data` read and checked (`trainer/data_checks.py`), grouped by what it is scored for.

    Arguments:
        data (`str` or `list[str]`): a folder, or `FORMAT=PATH[,images=DIR][,task=TASK]` specs.
        max_images (`int`, *optional*): only the first images of each file.

    Attributes: `coco` (task -> the first COCO file read for it: `detection`, `instance_segmentation`, `pose`,
    `caption`), `coco_skipped` (task -> why no COCO file is read for it), `referring` (`rec`, `res`,
    `region_classification` -> the records of every referring file) and `counting` (the counting questions of
    every conversation file; None without a conversation file).
    """

    def __init__(self, data, max_images: int | None = None):
        self.source = data
        self.specs = parse_evaluation_data(data)
        self.coco: dict[str, CocoData] = {}
        self.coco_skipped: dict[str, str] = {}
        self.referring: dict[str, list[dict]] = {}
        self.counting: list[dict] | None = None
        for spec in self.specs:
            if spec.format == "coco":
                self._add_coco(read_coco(spec, max_images))
            elif spec.format == "referring":
                for task, records in read_referring(spec, max_images).items():
                    self.referring.setdefault(task, []).extend(records)
            else:
                self.counting = (self.counting or []) + read_counting(spec, max_images)

    def _add_coco(self, data: "CocoData"):
        for task in data.tasks:
            self.coco.setdefault(task, data)
        for task, reason in data.skipped.items():
            self.coco_skipped.setdefault(task, f"{data.spec.path.name}: {reason}")

    def has(self, kind: str) -> bool:
        """Whether any file is of format `kind`."""
        return any(spec.format == kind for spec in self.specs)

    def default_output(self) -> Path:
        """`eval_results.json` next to the data: in the `--data` folder, or the folder of the first spec's file."""
        first = self.source if isinstance(self.source, (str, Path)) else next(iter(self.source))
        folder = Path(first) if Path(first).is_dir() else self.specs[0].path.parent
        return folder / "eval_results.json"


# COCO


@dataclass
class CocoData:
    """
    A COCO file, checked for the tasks it is read for, as pycocotools' `COCO` of the evaluated images (annotations
    completed where COCOeval needs a field the data may leave out: `id`, `area`, `num_keypoints`; flat polygons
    and mask files as RLE).
    """

    spec: EvaluationSpec
    coco: COCO
    image_ids: list
    tasks: set
    skipped: dict = field(default_factory=dict)  # task -> why the file is not read for it

    def image(self, image_id) -> dict:
        info = self.coco.imgs[image_id]
        return {"image": str(self.spec.images / info["file_name"]), "height": info["height"],
                "width": info["width"], "image_id": image_id}


def read_coco(spec: EvaluationSpec, max_images: int | None) -> CocoData:
    data = read_json(spec.path)
    tasks, skipped = coco_tasks(data, spec.task)
    for task in tasks:
        if not (task == "detection" and "instance_segmentation" in tasks):  # a subset of its checks
            raise_for_problems(check_coco(data, spec.path, spec.images, task))
    image_ids = sorted(image["id"] for image in data["images"])[:max_images]
    subset = _coco_subset(data, set(image_ids), spec.images, with_masks="instance_segmentation" in tasks)
    return CocoData(spec, quiet_coco(subset), image_ids, set(tasks), skipped)


def coco_tasks(data, task: str | None) -> tuple[list[str], dict[str, str]]:
    """The tasks a COCO file is read for (`task`, or those its annotations support) and why not for the others."""
    if task is not None:
        tasks = ["detection", task] if task == "instance_segmentation" else [task]  # one pass gives both
        return tasks, {other: f"read for task={task} only" for other in EVALUATION_TASKS["coco"] if other not in tasks}
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        return ["detection"], {}  # the check says what is wrong
    annotations = [a for a in annotations if isinstance(a, dict) and not a.get("iscrowd", 0)]
    if any("caption" in a for a in annotations) and not any("bbox" in a for a in annotations):
        return ["caption"], {}
    tasks, skipped = ["detection"], {}
    with_masks = sum(bool(a.get("segmentation")) for a in annotations)
    if annotations and with_masks == len(annotations):
        tasks.append("instance_segmentation")
    else:
        skipped["instance_segmentation"] = f"{with_masks} of {len(annotations)} annotations have a 'segmentation'"
    if any(isinstance(a.get("num_keypoints"), (int, float)) and a["num_keypoints"] > 0 for a in annotations):
        tasks.append("pose")
    else:
        skipped["pose"] = "no annotation has keypoints (num_keypoints > 0)"
    return tasks, skipped


def _coco_subset(data: dict, image_ids: set, folder: Path, with_masks: bool) -> dict:
    images = [image for image in data["images"] if image["id"] in image_ids]
    sizes = {image["id"]: (image["height"], image["width"]) for image in images}
    annotations = []
    for index, annotation in enumerate(data["annotations"]):
        if annotation.get("image_id") in image_ids:
            annotations.append(_complete(annotation, index, sizes[annotation["image_id"]], folder, with_masks))
    return {**data, "images": images, "annotations": annotations}


def _complete(annotation: dict, index: int, size: tuple, folder: Path, with_masks: bool) -> dict:
    """The fields COCOeval reads, where the data leaves them out (a copy; the file's values are kept)."""
    annotation = dict(annotation)
    annotation.setdefault("id", index + 1)
    if "bbox" in annotation:
        annotation.setdefault("area", annotation["bbox"][2] * annotation["bbox"][3])
    keypoints = annotation.get("keypoints")
    if isinstance(keypoints, list):
        annotation.setdefault("num_keypoints", sum(v > 0 for v in keypoints[2::3]))
    if with_masks and mask_form(annotation.get("segmentation")) in ("polygon", "file"):
        annotation["segmentation"] = encode_mask(decode_mask(annotation["segmentation"], *size, folder))
    return annotation


def encode_mask(mask) -> dict:
    """A boolean mask as COCO RLE with text counts (the results format)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def quiet_coco(dataset: dict) -> COCO:
    """pycocotools' `COCO` over a loaded dataset, without its prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# referring and conversations


def read_referring(spec: EvaluationSpec, max_images: int | None) -> dict[str, list[dict]]:
    """
    `{task: records}` for `rec`, `res` and `region_classification`: the records holding the field the task reads
    (every record for the spec's task), each checked, with its image's path and size.
    """
    lines = read_json_lines(spec.path)
    sizes = ImageSizes(spec.images)
    records = {}
    for task in referring_tasks(spec.task):
        uses = REFERRING_USES[task]
        used = [(line, r) for line, r in lines if spec.task is not None or not isinstance(r, dict) or uses(r)]
        if not used:
            continue
        raise_for_problems(check_referring(used, spec.path, spec.images, task))
        kept = first_images([r for _, r in used], max_images)
        records[task] = [{**_referring_fields(r), **sizes.image(r["image"]), "folder": spec.images} for r in kept]
    return records


def _referring_fields(record: dict) -> dict:
    """The fields evaluation reads (the others a record may carry never reach a request)."""
    return {key: record[key] for key in ("expression", "box", "mask", "category") if key in record}


def referring_tasks(task: str | None) -> list[str]:
    """The metric groups a referring spec feeds: all three, or its task's (grounding is REC; interactive, RES)."""
    if task is None:
        return list(REFERRING_USES)
    return [{"grounding": "rec", "interactive_segmentation": "res"}.get(task, task)]


def read_counting(spec: EvaluationSpec, max_images: int | None) -> list[dict]:
    """
    The counting questions of a conversation file (every record with `task=counting`), one image each: its
    `image` path, `height`, `width`, `question` and the `reference` answer.
    """
    records = read_json(spec.path)
    raise_for_problems(check_conversations(records, spec.path, spec.images))
    counting = [r for r in records if _one_image(r) and (spec.task == "counting" or is_counting_question(r))]
    counting = [r for r in counting if question_and_answer(r) is not None]
    sizes = ImageSizes(spec.images)
    samples = []
    for record in first_images([{**r, "image": _one_image(r)} for r in counting], max_images):
        question, answer = question_and_answer(record)
        samples.append({**sizes.image(record["image"]), "question": question, "reference": answer})
    return samples


def _one_image(record: dict) -> str | None:
    image = record.get("image")
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    return image if isinstance(image, str) else None


def first_images(records: list[dict], max_images: int | None) -> list[dict]:
    """The records of the first `max_images` images (in the order they first appear); all when None."""
    if max_images is None:
        return records
    kept = list(dict.fromkeys(record["image"] for record in records))[:max_images]
    return [record for record in records if record["image"] in set(kept)]


class ImageSizes:
    """Image path and size (from the file's header, read once per image) under an image folder."""

    def __init__(self, folder: Path):
        self.folder, self.sizes = Path(folder), {}

    def image(self, name: str) -> dict:
        if name not in self.sizes:
            with Image.open(self.folder / name) as image:
                self.sizes[name] = (image.height, image.width)
        height, width = self.sizes[name]
        return {"image": str(self.folder / name), "height": height, "width": width}


__all__ = [
    "EVALUATION_TASKS",
    "STANDARD_FILES",
    "CocoData",
    "EvaluationData",
    "EvaluationSpec",
    "ImageSizes",
    "coco_tasks",
    "encode_mask",
    "first_images",
    "folder_specs",
    "parse_evaluation_data",
    "parse_evaluation_spec",
    "quiet_coco",
    "read_coco",
    "read_counting",
    "read_referring",
    "referring_tasks",
]
