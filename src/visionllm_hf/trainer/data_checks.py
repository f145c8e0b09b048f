"""Checks of training data, run when a data source reads its file: every record, before any training step.

A check returns `DataProblem`s that name the file, the record, the field, what is wrong and how to fix it. A
source raises `DataError` (a `ValueError`) listing its errors and warns (`DataWarning`) of risky but valid input;
`check_source` returns every problem of a file without raising (for a command that lists them all).

    >>> from visionllm_hf.trainer.data_checks import check_source
    >>> for problem in check_source("coco", "instances.json", "images/", task="detection"):
    ...     print(problem)
"""

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..data_formats import mask_form

MAX_LISTED = 10  # problems a `DataError` message spells out; the rest are counted
COCO_TASKS = (
    "detection", "instance_segmentation", "interactive_segmentation", "pose", "caption", "in_context_detection",
    "in_context_segmentation",
)
BY_CATEGORY_TASKS = ("detection", "instance_segmentation", "in_context_detection", "in_context_segmentation")
MASK_TASKS = ("instance_segmentation", "interactive_segmentation", "in_context_segmentation")
REFERRING_TASKS = ("rec", "grounding", "res", "region_caption", "region_classification")
GENERATION_TASKS = ("text_to_image", "image_editing")
SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
COCO_FIX_CATEGORY = "add the category to 'categories' or correct the annotation's 'category_id'"
BOX_FIX = "give the box as [x1, y1, x2, y2] in pixels of the image, with x2 > x1 and y2 > y1"
MASK_FIX = ("give COCO polygons [[x1, y1, x2, y2, ...], ...] or [x1, y1, ...], RLE {'size': [height, width], "
            "'counts': ...} or a mask image's path relative to the image folder")


class DataWarning(UserWarning):
    """Training data that is valid but probably not what was meant (e.g. images without any annotation)."""


@dataclass(frozen=True)
class DataProblem:
    """
    One problem of a data file, in the file's own terms.

    Arguments:
        file (`str`): the data file (or image folder) at fault.
        issue (`str`): what is wrong.
        fix (`str`): how to fix it.
        record (`str`, *optional*): which record, e.g. `"annotation 4 (id 17, image_id 3)"` or `"record 2 (line 3)"`.
        field (`str`, *optional*): which field of the record, e.g. `"bbox"` or `"conversations[1].from"`.
        level (`str`, defaults to `"error"`): `"error"` (the source refuses the file) or `"warning"`.
    """

    file: str
    issue: str
    fix: str
    record: str | None = None
    field: str | None = None
    level: str = "error"

    def describe(self, with_file: bool = True) -> str:
        """`file, record, field 'f': issue; fix` (the file left out where a heading names it)."""
        field = f"field '{self.field}'" if self.field else None
        place = ", ".join(filter(None, [self.file if with_file else None, self.record, field]))
        return f"{place}: {self.issue}; {self.fix}" if place else f"{self.issue}; {self.fix}"

    def __str__(self) -> str:
        return self.describe()


class DataError(ValueError):
    """Training data a source refuses; `problems` holds every problem found (errors and warnings)."""

    def __init__(self, problems: list[DataProblem]):
        self.problems = list(problems)
        super().__init__(format_problems(self.problems))


def format_problems(problems: list[DataProblem], limit: int = MAX_LISTED) -> str:
    """The errors of `problems` as a message: a heading naming the file, the first `limit`, and how many more."""
    errors = [problem for problem in problems if problem.level == "error"]
    files = sorted({problem.file for problem in errors})
    heading = f"{len(errors)} problem{'s' if len(errors) != 1 else ''} in {', '.join(files)}"
    lines = [f"  - {problem.describe(with_file=len(files) > 1)}" for problem in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"  ... and {len(errors) - limit} more (`data_checks.check_source` lists them all)")
    return "\n".join([heading + ":", *lines])


def raise_for_problems(problems: list[DataProblem]):
    """Raises `DataError` if any problem is an error; otherwise warns of each warning."""
    if any(problem.level == "error" for problem in problems):
        raise DataError(problems)
    for problem in problems:
        warnings.warn(str(problem), DataWarning, stacklevel=3)


class ProblemList(list):
    """The problems of one file, collected by `error(...)` and `warn(...)`."""

    def __init__(self, file):
        super().__init__()
        self.file = str(file)

    def error(self, issue: str, fix: str, record: str | None = None, field: str | None = None):
        self.append(DataProblem(self.file, issue, fix, record, field))

    def warn(self, issue: str, fix: str, record: str | None = None, field: str | None = None):
        self.append(DataProblem(self.file, issue, fix, record, field, level="warning"))


# Reading files


def read_json(path) -> object:
    """A JSON file's content; `DataError` naming the line and column where it does not parse."""
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        problems = ProblemList(path)
        problems.error(f"is not valid JSON: {error.msg}", "fix the JSON syntax there (a missing or extra comma "
                       "or quote?)", record=f"line {error.lineno}, column {error.colno}")
        raise DataError(problems) from None


def read_json_lines(path) -> list[tuple[int, object]]:
    """A JSON-lines file as `(line number, record)` pairs (blank lines skipped); `DataError` naming bad lines."""
    text = _read_text(path)
    records, problems = [], ProblemList(path)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            problems.error(f"is not valid JSON: {error.msg} (column {error.colno})",
                           "write one complete JSON object per line", record=f"line {number}")
    if problems and _parses_as_one_document(text):
        problems = ProblemList(path)
        problems.error("is one JSON document, not JSON lines", "write one JSON object per line (.jsonl)")
    if problems:
        raise DataError(problems)
    return records


def _read_text(path) -> str:
    problems = ProblemList(path)
    if Path(path).is_dir():
        problems.error("is a folder", "give the data file itself")
    elif not Path(path).is_file():
        problems.error("does not exist", "check the path (relative paths start from the current folder)")
    else:
        try:
            return Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            problems.error(f"is not UTF-8 text (byte {error.start})", "give a JSON file saved as UTF-8")
    raise DataError(problems)


def _parses_as_one_document(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


# Checks shared by the formats


def is_number(value) -> bool:
    """A finite int or float (JSON allows `NaN` and `Infinity`; booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def all_finite(values: list) -> bool:
    """Every value a finite number: one C-level sum instead of a test per value (polygons have thousands)."""
    try:
        return math.isfinite(sum(values, 0.0))  # strings, None or lists raise; NaN or infinity stays non-finite
    except TypeError:
        return False


def is_text(value) -> bool:
    """A string with something in it."""
    return isinstance(value, str) and bool(value.strip())


def shown(value, width: int = 60) -> str:
    """`value` as JSON, cut to `width` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def xyxy_box_issue(box) -> str | None:
    """What is wrong with an `[x1, y1, x2, y2]` box, or None."""
    if not isinstance(box, list) or len(box) != 4 or not all(map(is_number, box)):
        return f"is {shown(box)}, not 4 finite numbers"
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"{shown(box)} is empty or reversed (x2 <= x1 or y2 <= y1)"
    return None


def xywh_box_issue(box) -> str | None:
    """What is wrong with a COCO `[x, y, width, height]` box, or None."""
    if not isinstance(box, list) or len(box) != 4 or not all(map(is_number, box)):
        return f"is {shown(box)}, not 4 finite numbers [x, y, width, height]"
    if box[2] < 0 or box[3] < 0:
        return f"{shown(box)} has a negative width or height"
    return None


def mask_issue(mask, height=None, width=None, images=None) -> str | None:
    """
    What is wrong with a mask (`data_formats.decode_mask`'s forms: COCO polygons, nested or flat, RLE with
    compressed or uncompressed counts, a mask image path), or None. An RLE's `size` and a mask image's size are
    checked against `height`/`width` when given; a mask image must exist in `images` (an `ImageFolder`) when given.
    """
    form = mask_form(mask)
    if form == "rle":
        return _rle_issue(mask, height, width)
    if form == "file":
        return _mask_file_issue(str(mask), height, width, images)
    if form == "polygon":
        return _polygon_issue(mask)
    if form == "polygons":
        return next(filter(None, map(_polygon_issue, mask)), None)
    return f"is {shown(mask)}: neither polygons (a list of [x1, y1, x2, y2, ...] lists), RLE nor a mask image path"


def _polygon_issue(polygon: list) -> str | None:
    if len(polygon) < 6 or len(polygon) % 2 or not all_finite(polygon):
        return f"has the polygon {shown(polygon)}, not an even number (6 or more) of finite coordinates"
    return None


def _rle_issue(mask: dict, height, width) -> str | None:
    size, counts = mask.get("size"), mask.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
        return f"is an RLE whose 'size' is {shown(size)}, not [height, width]"
    if height is not None and size != [height, width]:
        return f"is an RLE of size {size}, but its image is [height, width] [{height}, {width}]"
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            return f"is an RLE whose 'counts' {shown(counts)} are not run lengths (integers >= 0)"
        if sum(counts) != size[0] * size[1]:
            return f"is an RLE whose run lengths add up to {sum(counts)}, not height * width = {size[0] * size[1]}"
        return None
    if not isinstance(counts, (str, bytes)) or not counts:
        return f"is an RLE whose 'counts' is {shown(counts)}, not a string or a list of run lengths"
    return None


def _mask_file_issue(name: str, height, width, images) -> str | None:
    """A mask image path: present in the image folder, and (when the image's size is known) of the image's size."""
    if images is None or not images.exists:
        return None  # no folder to look in (or a missing folder, reported once elsewhere)
    if not is_text(name) or not images.has(name):
        return (f"is {shown(name)}: neither polygons, RLE nor a mask image in the image folder {images.folder} "
                "(no such file there)")
    size = image_size(images, name)
    if size is None:
        return f"is the mask image {shown(name)}, which is not an image file"
    if height is not None and size != (height, width):
        return f"is a mask image of [height, width] [{size[0]}, {size[1]}], but its image is [{height}, {width}]"
    return None


def image_size(images, name: str) -> tuple[int, int] | None:
    """`(height, width)` of an image under `images` (an `ImageFolder`), from its header; None if it is not one."""
    try:
        with Image.open(images.folder / name) as image:
            return image.height, image.width
    except (OSError, ValueError):
        return None


class ImageFolder:
    """Which image files exist under a folder: one directory listing per sub-folder named, not a stat per image."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.exists = self.folder.is_dir()
        self._listings: dict[str, set] = {}

    def has(self, name: str) -> bool:
        parent, _, base = name.replace(os.sep, "/").rpartition("/")
        if parent not in self._listings:
            directory = self.folder / parent
            self._listings[parent] = set(os.listdir(directory)) if directory.is_dir() else set()
        return base in self._listings[parent]


def check_image_name(problems: ProblemList, images: ImageFolder, name, record: str, field: str):
    """A record's image field: a file name that exists in the image folder."""
    if not is_text(name):
        problems.error(f"is {shown(name)}, not an image file name",
                       "give the image's path relative to the image folder", record, field)
    elif images.exists and not images.has(name):
        problems.error(f"names '{name}', which is not in the image folder {images.folder}",
                       "add the image there, give the right images=DIR, or remove the record", record, field)


def check_image_folder(problems: ProblemList, images: ImageFolder):
    """One problem for a missing image folder (rather than one per image)."""
    if not images.exists:
        problems.error(f"its image folder {images.folder} does not exist",
                       "give the folder holding the images (images=DIR)")


def check_task(problems: ProblemList, task: str, tasks: tuple, kind: str) -> bool:
    """Whether `task` is one of `tasks` (a problem otherwise)."""
    if task in tasks:
        return True
    problems.error(f"task '{task}' is not a {kind} task", f"choose from {', '.join(tasks)}")
    return False


# COCO


def check_coco(data, path, image_folder, task: str = "detection") -> list[DataProblem]:
    """
    Every problem of a COCO annotation file for `task`: top-level keys, categories, images (ids, sizes, files
    present), annotations (known image and category ids, `bbox`, and the task's `segmentation`, `keypoints` or
    `caption`), and whether any sample is left for the task.
    """
    problems = ProblemList(path)
    if not check_task(problems, task, COCO_TASKS, "COCO"):
        return problems
    if not isinstance(data, dict):
        problems.error(f"holds a JSON {type(data).__name__}, not a COCO object", "give a COCO file "
                       "{'images': [...], 'annotations': [...], 'categories': [...]}")
        return problems
    if not _check_coco_keys(problems, data, task):
        return problems
    categories = _check_coco_categories(problems, data.get("categories"), task)
    folder = ImageFolder(image_folder)
    images = _check_coco_images(problems, data["images"], folder)
    used = {}  # annotation name -> annotation, for the annotations the task reads
    for index, annotation in enumerate(data["annotations"]):
        name = _check_coco_annotation(problems, annotation, index, images, categories, task, folder)
        if name:
            used[name] = annotation
    if task == "pose":
        _check_keypoint_counts(problems, used, data.get("categories"))
    _check_coco_coverage(problems, list(used.values()), images, categories, task)
    return problems


def _known(key, mapping: dict) -> bool:
    try:
        return key in mapping
    except TypeError:  # a list or an object as an id
        return False


def _check_coco_keys(problems: ProblemList, data: dict, task: str) -> bool:
    missing = {
        "images": "so there is nothing to train on",
        "annotations": "so every image would train with empty targets (as if nothing were ever there)",
    }
    fix = "give a complete COCO file (instances, person_keypoints or captions JSON)"
    for key, consequence in missing.items():
        if key not in data:
            problems.error(f"is missing (the file has {', '.join(data) or 'no keys'}), {consequence}", fix, field=key)
        elif not isinstance(data[key], list):
            problems.error(f"is a {type(data[key]).__name__}, not a list", fix, field=key)
    if task in BY_CATEGORY_TASKS and "categories" not in data:
        problems.error(f"has no 'categories' list, and task '{task}' asks for objects by category name",
                       "add 'categories': [{'id': ..., 'name': ...}] (a captions file is for task=caption)",
                       field="categories")
    return not problems


def _check_coco_categories(problems: ProblemList, categories, task: str) -> dict | None:
    """`{id: name}`, or None where the file has no categories (or the task ignores them)."""
    if categories is None or task in ("caption", "interactive_segmentation"):
        return None
    if not isinstance(categories, list):
        problems.error(f"is a {type(categories).__name__}, not a list", "give [{'id': ..., 'name': ...}]",
                       field="categories")
        return {}
    names = {}
    for index, category in enumerate(categories):
        record = f"category {index}"
        if not isinstance(category, dict) or not isinstance(category.get("id"), (int, str)):
            problems.error(f"is {shown(category)}, with no 'id'", "give {'id': ..., 'name': ...}", record)
        elif category["id"] in names:
            problems.error(f"repeats id {category['id']}", "give every category its own id", record, "id")
        elif not is_text(category.get("name")):
            problems.error(f"is {shown(category.get('name'))}, not a category name", "name the category", record,
                           "name")
        else:
            names[category["id"]] = category["name"]
    return names


def _check_coco_images(problems: ProblemList, images: list, folder: ImageFolder) -> dict:
    """`{id: image}` of the well-formed images; every image file looked up in `folder`."""
    check_image_folder(problems, folder)
    by_id = {}
    for index, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("id"), (int, str)):
            problems.error(f"is {shown(image)}, with no 'id'", "give {'id', 'file_name', 'width', 'height'}",
                           f"image {index}")
            continue
        record = f"image {index} (id {image['id']})"
        if image["id"] in by_id:
            problems.error(f"repeats image id {image['id']}", "give every image its own id", record, "id")
            continue
        for key in ("width", "height"):
            if not is_number(image.get(key)) or image[key] <= 0:
                problems.error(f"is {shown(image.get(key))}, not a positive number of pixels",
                               "give the image's size in pixels", record, key)
        check_image_name(problems, folder, image.get("file_name"), record, "file_name")
        by_id[image["id"]] = image
    return by_id


def _check_coco_annotation(problems: ProblemList, annotation, index: int, images: dict, categories, task,
                           folder=None):
    """Checks what `task` reads of one annotation; its name if the source uses it (not crowd ones), else None."""
    if not isinstance(annotation, dict):
        problems.error(f"is {shown(annotation)}, not an object", "give {'image_id', 'category_id', 'bbox', ...}",
                       f"annotation {index}")
        return None
    name = f"annotation {index} (id {annotation.get('id', '?')}, image_id {annotation.get('image_id', '?')})"
    if annotation.get("iscrowd", 0) or not _uses(annotation, task, problems, name):
        return None
    image_id = annotation.get("image_id")
    if not _known(image_id, images):
        issue = f"is {shown(image_id)}, which is not an id in 'images'" if "image_id" in annotation else "is missing"
        problems.error(issue,
                       "add the image to 'images' or correct the annotation's 'image_id'", name, "image_id")
    if task == "caption":
        if not is_text(annotation.get("caption")):
            problems.error(f"is {shown(annotation.get('caption'))}, not a caption", "give the caption text", name,
                           "caption")
        return name
    if task != "interactive_segmentation":
        _check_category_id(problems, annotation, categories, name)
    _check_annotation_geometry(problems, annotation, images.get(image_id) if _known(image_id, images) else None,
                               task, name, folder)
    return name


def _uses(annotation: dict, task: str, problems: ProblemList, name: str) -> bool:
    """Whether the source reads this annotation for `task` (pose: `num_keypoints > 0`; interactive: a mask)."""
    if task == "interactive_segmentation":
        return bool(annotation.get("segmentation"))
    if task != "pose":
        return True
    count = annotation.get("num_keypoints", 0)
    if not is_number(count):
        problems.error(f"is {shown(count)}, not a number", "give the number of labelled keypoints", name,
                       "num_keypoints")
        return False
    return count > 0


def _check_category_id(problems: ProblemList, annotation: dict, categories, name: str):
    category_id = annotation.get("category_id")
    if categories is None:
        if "category_id" not in annotation:
            problems.error("is missing", "give the annotation's category id", name, "category_id")
    elif not _known(category_id, categories):
        known = ", ".join(map(str, list(categories)[:20])) or "none"
        issue = f"is {shown(category_id)}, which is not in 'categories' (ids {known})"
        problems.error(issue if "category_id" in annotation else "is missing", COCO_FIX_CATEGORY, name, "category_id")


def _check_annotation_geometry(problems: ProblemList, annotation: dict, image, task: str, name: str, folder=None):
    issue = xywh_box_issue(annotation.get("bbox"))
    if issue:
        problems.error(issue, "give [x, y, width, height] in pixels (COCO boxes are xywh)", name, "bbox")
    if task in MASK_TASKS:
        height, width = (image.get("height"), image.get("width")) if image else (None, None)
        issue = mask_issue(annotation.get("segmentation"), height, width, folder)
        if issue:
            problems.error(issue, MASK_FIX, name, "segmentation")
    if task == "pose":
        keypoints = annotation.get("keypoints")
        if not isinstance(keypoints, list) or len(keypoints) % 3 or not all_finite(keypoints):
            problems.error(f"is {shown(keypoints)}, not finite numbers x1, y1, v1, x2, y2, v2, ...",
                           "give 3 numbers (x, y, visibility) per keypoint", name, "keypoints")


def _check_keypoint_counts(problems: ProblemList, used: dict, categories):
    """Pose: 3*K keypoint numbers, K the length of the category's `keypoints` names (else of the first annotation)."""
    named = {
        category.get("id"): len(category["keypoints"]) for category in categories or []
        if isinstance(category, dict) and isinstance(category.get("keypoints"), list)
    }
    first = None
    for name, annotation in used.items():
        keypoints = annotation.get("keypoints")
        if not isinstance(keypoints, list) or len(keypoints) % 3:
            continue  # reported already
        first = first or len(keypoints) // 3
        category_id = annotation.get("category_id")
        count = named[category_id] if _known(category_id, named) else first
        if len(keypoints) != 3 * count:
            problems.error(f"has {len(keypoints)} numbers, but the category has {count} keypoints "
                           f"(3 * {count} = {3 * count} numbers)", "give x, y, visibility for every keypoint",
                           name, "keypoints")


def _check_coco_coverage(problems: ProblemList, annotations: list, images: dict, categories, task: str):
    """No sample left for the task is an error; images without annotations and unused categories are warnings."""
    if not annotations:
        reason = {
            "caption": "no annotation has a 'caption'",
            "pose": "no annotation has keypoints (num_keypoints > 0)",
            "interactive_segmentation": "no annotation has a 'segmentation'",
        }.get(task, "no annotation (besides crowd ones), so every image would train as 'nothing here'")
        problems.error(f"has no usable sample for task '{task}': {reason}",
                       "give the COCO file for this task, or the task for this file (task=...)", field="annotations")
        return
    if task not in BY_CATEGORY_TASKS:
        return
    covered = {annotation.get("image_id") for annotation in annotations if _known(annotation.get("image_id"), images)}
    bare = [image_id for image_id in images if image_id not in covered]
    if bare:
        ids = ", ".join(map(str, bare[:10])) + (", ..." if len(bare) > 10 else "")
        problems.warn(f"{len(bare)} of {len(images)} images have no annotation (ids {ids}); they train as "
                      "'nothing here' samples", "fine for negatives; otherwise add their annotations", field="images")
    present = {a.get("category_id") for a in annotations if _known(a.get("category_id"), categories or {})}
    unused = [str(name) for category, name in (categories or {}).items() if category not in present]
    if unused:
        problems.warn(f"categories {', '.join(unused[:10])} occur in no annotation; they are only ever asked as "
                      "absent", "fine if meant; otherwise add their annotations", field="categories")


# LLaVA-style conversations


def check_conversations(records, path, image_folder, task: str = "conversation") -> list[DataProblem]:
    """
    Every problem of a LLaVA-style conversation file: a list of records, each with a `conversations` list of
    `{"from", "value"}` turns (known speakers, an answer turn), image files present, and as many `<image>` in the
    turns as the record has images (when the turns hold any).
    """
    problems = ProblemList(path)
    if not isinstance(records, list):
        problems.error(f"holds a JSON {type(records).__name__}, not a list of records",
                       "give a JSON list [{'image': ..., 'conversations': [{'from': 'human', 'value': ...}, ...]}]")
        return problems
    if not records:
        problems.error("holds no records", "add conversation records")
    images = ImageFolder(image_folder)
    if any(isinstance(record, dict) and (record.get("image") or record.get("video")) for record in records):
        check_image_folder(problems, images)
    for index, record in enumerate(records):
        _check_conversation(problems, record, f"record {index}", images)
    return problems


def _check_conversation(problems: ProblemList, record, name: str, images: ImageFolder):
    if not isinstance(record, dict):
        problems.error(f"is {shown(record)}, not an object", "give {'image': ..., 'conversations': [...]}", name)
        return
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        problems.error(f"is {shown(turns)}, not a list of turns", "give [{'from': 'human', 'value': ...}, "
                       "{'from': 'gpt', 'value': ...}]", name, "conversations")
        return
    names = _conversation_images(problems, record.get("image"), name, images)
    videos = _conversation_videos(problems, record.get("video"), name, images)
    placeholders, video_placeholders, answered, reported = 0, 0, False, len(problems)
    for number, turn in enumerate(turns):
        field = f"conversations[{number}]"
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            problems.error(f"is {shown(turn)}, not {{'from': ..., 'value': text}}", "give each turn a speaker and "
                           "its text", name, field)
        elif turn.get("from") not in SPEAKERS:
            problems.error(f"speaker {shown(turn.get('from'))} is not one of {', '.join(SPEAKERS)}",
                           "use 'human' for the user and 'gpt' for the answers", name, field + ".from")
        else:
            placeholders += turn["value"].count("<image>")
            video_placeholders += turn["value"].count("<video>")
            answered = answered or SPEAKERS[turn["from"]] == "assistant"
    if not answered and len(problems) == reported:  # (a turn with a bad speaker may be the answer)
        problems.error("has no answer turn ('from': 'gpt'), so nothing to learn", "add the answer", name,
                       "conversations")
    if names is not None and placeholders and placeholders != len(names):
        problems.error(f"has {placeholders} '<image>' placeholders for {len(names)} image(s)",
                       "write one '<image>' per image of the record (or none, to put them all first)", name,
                       "conversations")
    if videos is not None and video_placeholders and video_placeholders != len(videos):
        problems.error(f"has {video_placeholders} '<video>' placeholders for {len(videos)} video(s)",
                       "write one '<video>' per video of the record (or none, to put them all first)", name,
                       "conversations")


def _conversation_images(problems: ProblemList, value, name: str, images: ImageFolder) -> list | None:
    """The record's image names (`image`: absent, one name or a list), each looked up in the folder."""
    names = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        problems.error(f"is {shown(value)}, not an image name or a list of them", "give 'image': 'a.jpg' or "
                       "['a.jpg', 'b.jpg']", name, "image")
        return None
    for number, image in enumerate(names):
        check_image_name(problems, images, image, name, "image" if isinstance(value, str) else f"image[{number}]")
    return names


def _conversation_videos(problems: ProblemList, value, name: str, images: ImageFolder) -> list | None:
    """The record's videos (`video`: absent, or one or a list of frame folders / video files in the folder)."""
    names = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(is_text(video) for video in names):
        problems.error(f"is {shown(value)}, not a video (frame folder or file) or a list of them",
                       "give 'video': 'clips/0001' (a folder of frames) or 'video': 'clip.mp4'", name, "video")
        return None
    for number, video in enumerate(names):
        if images.exists and not images.has(video):
            problems.error(f"names '{video}', which is not in the image folder {images.folder}",
                           "add the frame folder or video file there, or give the right images=DIR", name,
                           "video" if isinstance(value, str) else f"video[{number}]")
    return names


# JSON lines: referring and generation


def check_referring(lines: list, path, image_folder, task: str = "rec") -> list[DataProblem]:
    """
    Every problem of a referring JSON-lines file (`(line, record)` pairs from `read_json_lines`): `image` present,
    `expression`, and per task a `box` (`rec`, `grounding`: 4 finite numbers, x2 > x1, y2 > y1), a `mask`
    (`res`), a region (`box` or `mask`: `region_caption`, `region_classification`) and a `category`
    (`region_classification`).
    """
    problems = ProblemList(path)
    if not check_task(problems, task, REFERRING_TASKS, "referring"):
        return problems
    images = ImageFolder(image_folder)
    _check_lines_present(problems, lines, images)
    for index, (line, record) in enumerate(lines):
        name = f"record {index} (line {line})"
        if not isinstance(record, dict):
            problems.error(f"is {shown(record)}, not an object", "give {'image', 'expression', 'box', ...}", name)
            continue
        check_image_name(problems, images, record.get("image"), name, "image")
        if not is_text(record.get("expression")):
            problems.error(f"is {shown(record.get('expression'))}, not text", "give the referring expression", name,
                           "expression")
        _check_referring_region(problems, record, task, name, images)
        if task == "region_classification" and not is_text(record.get("category")):
            problems.error(f"is {shown(record.get('category'))}, and task '{task}' answers with the category",
                           "give the region's category name", name, "category")
    return problems


def _check_referring_region(problems: ProblemList, record: dict, task: str, name: str, images=None):
    """
    The box or mask `task` reads (region tasks: the box when there is one, else the mask); an RLE's or mask
    image's size is checked against the image's (read from its header).
    """
    region_task = task in ("region_caption", "region_classification")
    if task in ("rec", "grounding") or (region_task and "box" in record):
        issue = xyxy_box_issue(record.get("box"))
        if issue:
            issue = issue if "box" in record else f"is missing, and task '{task}' needs it"
            problems.error(issue, BOX_FIX, name, "box")
    elif task == "res" or region_task:
        if "mask" not in record:
            needed = "a 'box' or a 'mask'" if region_task else "a 'mask'"
            problems.error(f"is missing, and task '{task}' needs {needed}", MASK_FIX, name, "mask")
        else:
            size = _referring_image_size(record, images)
            issue = mask_issue(record["mask"], *size, images)
            if issue:
                problems.error(issue, MASK_FIX, name, "mask")


def _referring_image_size(record: dict, images) -> tuple:
    """`(height, width)` of the record's image when its mask's size is checked against it, else `(None, None)`."""
    if mask_form(record.get("mask")) not in ("rle", "file") or images is None or not images.exists:
        return None, None
    name = record.get("image")
    size = image_size(images, name) if is_text(name) and images.has(name) else None
    return size or (None, None)


def check_generation(lines: list, path, image_folder, task: str = "text_to_image") -> list[DataProblem]:
    """
    Every problem of a generation JSON-lines file: `{"prompt", "image"}` for `text_to_image`, `{"input_image",
    "instruction", "image"}` for `image_editing`, the images present in the image folder.
    """
    problems = ProblemList(path)
    if not check_task(problems, task, GENERATION_TASKS, "generation"):
        return problems
    images = ImageFolder(image_folder)
    _check_lines_present(problems, lines, images)
    text_key = "prompt" if task == "text_to_image" else "instruction"
    image_keys = ["image"] + (["input_image"] if task == "image_editing" else [])
    for index, (line, record) in enumerate(lines):
        name = f"record {index} (line {line})"
        if not isinstance(record, dict):
            problems.error(f"is {shown(record)}, not an object", f"give {{'{text_key}', {', '.join(image_keys)}}}",
                           name)
            continue
        if not is_text(record.get(text_key)):
            problems.error(f"is {shown(record.get(text_key))}, and task '{task}' needs its text",
                           f"give the {text_key}", name, text_key)
        for key in image_keys:
            check_image_name(problems, images, record.get(key), name, key)
    return problems


def _check_lines_present(problems: ProblemList, lines: list, images: ImageFolder):
    if not lines:
        problems.error("holds no records", "add one JSON object per line")
    else:
        check_image_folder(problems, images)


# Any format


CHECKS = {  # format -> (reader, checker, default task)
    "coco": (read_json, check_coco, "detection"),
    "v1detection": (read_json, check_coco, "detection"),
    "conversation": (read_json, check_conversations, "conversation"),
    "referring": (read_json_lines, check_referring, "rec"),
    "generation": (read_json_lines, check_generation, "text_to_image"),
}


def check_source(kind: str, path, image_folder=None, task: str | None = None) -> list[DataProblem]:
    """
    Every problem (errors and warnings) of one data file, without raising: what a source of format `kind`
    (`coco`, `v1detection`, `conversation`, `referring` or `generation`) would refuse or warn of.

    Arguments:
        kind (`str`): the `--data` format.
        path (`str`): the data file.
        image_folder (`str`, *optional*): its image folder (defaults to the file's folder).
        task (`str`, *optional*): the task (defaults to the format's default task).
    """
    if kind not in CHECKS:
        raise ValueError(f"unknown data format '{kind}'; choose from {', '.join(CHECKS)}")
    read, check, default_task = CHECKS[kind]
    try:
        records = read(path)
    except DataError as error:
        return error.problems
    folder = image_folder if image_folder is not None else Path(path).parent
    return check(records, path, folder, task or default_task)


__all__ = [
    "COCO_TASKS",
    "GENERATION_TASKS",
    "REFERRING_TASKS",
    "SPEAKERS",
    "DataError",
    "DataProblem",
    "DataWarning",
    "ProblemList",
    "check_coco",
    "check_conversations",
    "check_generation",
    "check_referring",
    "check_source",
    "format_problems",
    "raise_for_problems",
    "read_json",
    "read_json_lines",
]
