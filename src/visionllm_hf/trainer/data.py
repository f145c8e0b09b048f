"""Dataset adapters: users' formats -> instruction samples (see `collator.py` for the sample dict).

- `ConversationSource`: LLaVA-style JSON, `[{"image": "a.jpg", "conversations": [{"from": "human", ...}]}]`;
  a record may name a `video` instead (a frame folder or a video file, `<video>` in its text);
- `CocoSource`: COCO JSON + image folder, tasks `detection`, `instance_segmentation`,
  `interactive_segmentation` (instances), `pose` (person_keypoints) and `caption` (captions);
- `ReferringSource`: JSON lines `{"image", "expression", "box" and/or "mask", "category"}`, tasks `rec`,
  `grounding`, `res`, `region_caption`, `region_classification`;
- `GenerationSource`: JSON lines of text-to-image pairs `{"prompt", "image"}` (task `text_to_image`) or edits
  `{"input_image", "instruction", "image"}` (task `image_editing`);
- `DatasetSource`: any `datasets.Dataset` with an image column and a column mapping.

Every sample is built from its index and a random generator, with a random instruction template (and, for
detection, a random subset and order of categories, as VisionLLM v1/v2 do). `MixedTaskDataset` mixes sources with
sampling ratios; each of its items is a whole per-device batch from one source (one task group).

Every source checks all its records when it reads them (see `data_checks.py`): bad data raises a `DataError`
(a `ValueError`) naming the file, record, field and fix, before any model is loaded; risky but valid data warns
(`DataWarning`). A built source keeps those warnings in `problems`.
"""

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data_formats import decode_mask
from ..processing.tasks import (  # noqa: F401 (the templates are shared with inference, re-exported here)
    CAPTION_TEMPLATES,
    DETECTION_TEMPLATES,
    GENERATION_TEMPLATES,
    IN_CONTEXT_SEGMENTATION_TEMPLATES,
    IN_CONTEXT_TEMPLATES,
    INTERACTIVE_TEMPLATES,
    POSE_TEMPLATES,
    REC_TEMPLATES,
    RES_TEMPLATES,
    SEGMENTATION_TEMPLATES,
    in_context_question,
)
from ..processing.templates import region_caption_prompt, region_classification_prompt
from .data_checks import (
    COCO_TASKS,
    GENERATION_TASKS,
    REFERRING_TASKS,
    SPEAKERS,
    DataProblem,
    ProblemList,
    check_coco,
    check_conversations,
    check_generation,
    check_referring,
    raise_for_problems,
    read_json,
    read_json_lines,
)



def conversation_sample(question: str, answer: str, images: list, task: str, **extra) -> dict:
    """A one-turn sample: `<image>` first, then the question; the answer as the assistant turn."""
    prefix = "<image>\n" * len(images)
    messages = [{"role": "user", "content": prefix + question}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "images": images, "task": task, **extra}


class ConversationSource:
    """LLaVA-style conversation JSON; `human` -> user, `gpt` -> assistant; `<image>` kept where it is."""

    def __init__(self, path: str, image_folder: str | None = None, task: str = "conversation"):
        self.records = read_json(path)
        self.image_folder = Path(image_folder or Path(path).parent)
        self.task = task
        self.problems: list[DataProblem] = check_conversations(self.records, path, self.image_folder, task)
        raise_for_problems(self.problems)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_videos(self) -> bool:
        return any(record.get("video") for record in self.records)

    def sample(self, index: int, rng: random.Random) -> dict:
        record = self.records[index]
        names, videos = _names(record.get("image")), _names(record.get("video"))
        messages = [{"role": SPEAKERS[turn["from"]], "content": turn["value"]} for turn in record["conversations"]]
        if names and not any("<image>" in m["content"] for m in messages):
            messages[0]["content"] = "<image>\n" * len(names) + messages[0]["content"]
        if videos and not any("<video>" in m["content"] for m in messages):
            messages[0]["content"] = "<video>\n" * len(videos) + messages[0]["content"]
        sample = {"messages": messages, "images": [str(self.image_folder / n) for n in names], "task": self.task}
        if videos:
            sample["videos"] = [str(self.image_folder / video) for video in videos]
        return sample


def _names(value) -> list[str]:
    """A record's `image` / `video` field (absent, one name or a list) as a list."""
    return [] if not value else [value] if isinstance(value, str) else list(value)


class CocoSource:
    """
    COCO-format annotations and their image folder.

    Arguments:
        annotation_file (`str`): instances / person_keypoints / captions JSON.
        image_folder (`str`): folder of the `file_name`s.
        task (`str`): `detection`, `instance_segmentation`, `interactive_segmentation`, `pose`, `caption`,
            `in_context_detection` or `in_context_segmentation` (VisionLLM v2's in-context prompts: 1-2 other
            images of a category, each with one of its objects marked by its box (detection) or mask
            (segmentation), then the query image: the answer names the category and finds all of them).
        max_categories (`int`, defaults to 10): most categories asked per detection sample.
    """

    tasks = COCO_TASKS

    def __init__(self, annotation_file: str, image_folder: str, task: str = "detection", max_categories: int = 10):
        if task not in self.tasks:
            raise ValueError(f"unknown COCO task '{task}'; choose from {self.tasks}")
        data = read_json(annotation_file)
        self.problems: list[DataProblem] = check_coco(data, annotation_file, image_folder, task)
        raise_for_problems(self.problems)
        self.task = task
        self.annotation_file = annotation_file
        self.image_folder = Path(image_folder)
        self.images = {image["id"]: image for image in data["images"]}
        self.categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        self.category_keypoints = {c["id"]: list(c["keypoints"]) for c in data.get("categories", []) if c.get("keypoints")}
        self.target_keypoints: list[str] | None = None  # the model's keypoint names, see `use_keypoint_names`
        self.max_categories = max_categories
        self.annotations: dict[int, list] = {image_id: [] for image_id in self.images}
        for annotation in data.get("annotations", []):
            if not annotation.get("iscrowd", 0):
                self.annotations[annotation["image_id"]].append(annotation)
        keep = {
            "caption": lambda anns: any("caption" in a for a in anns),
            "pose": lambda anns: any(a.get("num_keypoints", 0) > 0 for a in anns),
            "interactive_segmentation": lambda anns: any(a.get("segmentation") for a in anns),
        }.get(task, lambda anns: True)
        self.image_ids = [image_id for image_id in self.images if keep(self.annotations[image_id])]
        self.images_by_category: dict[int, list[int]] = {}  # for in-context examples
        for image_id in self.image_ids:
            for category in sorted({a["category_id"] for a in self.annotations[image_id] if "category_id" in a}):
                self.images_by_category.setdefault(category, []).append(image_id)

    def __len__(self) -> int:
        return len(self.image_ids)

    def keypoint_names_in_data(self, model_names: list[str]) -> list[str]:
        """
        The keypoint names of the categories with keypoint annotations, in order. A category that names no
        keypoints is read by position as the model's `model_names`, which needs exactly as many keypoints.
        """
        names = []
        for category in self._pose_categories():
            declared = self.category_keypoints.get(category)
            if declared is None:
                count = self._keypoint_count(category)
                if count != len(model_names):
                    raise ValueError(
                        f"{self.annotation_file}: category '{self.categories[category]}' has {count} keypoints but "
                        f"names none, and the model predicts {len(model_names)} ({', '.join(model_names)}): list "
                        "its keypoint names in the category's 'keypoints' field"
                    )
                declared = list(model_names)
            names += [name for name in declared if name not in names]
        return names

    def use_keypoint_names(self, names: list[str]):
        """Lay pose targets out in this order of names (the model's), matching each category's keypoints by name."""
        self.target_keypoints = list(names)

    def _pose_categories(self) -> list[int]:
        return sorted({a["category_id"] for anns in self.annotations.values() for a in anns if a.get("num_keypoints", 0)})

    def _keypoint_count(self, category: int) -> int:
        annotation = next(a for anns in self.annotations.values() for a in anns
                          if a["category_id"] == category and a.get("num_keypoints", 0))
        return len(annotation["keypoints"]) // 3

    def sample(self, index: int, rng: random.Random) -> dict:
        image_id = self.image_ids[index]
        image = self.images[image_id]
        path = str(self.image_folder / image["file_name"])
        annotations = self.annotations[image_id]
        if self.task == "caption":
            caption = rng.choice([a["caption"] for a in annotations if "caption" in a]).strip()
            return conversation_sample(rng.choice(CAPTION_TEMPLATES), caption, [path], self.task)
        if self.task == "interactive_segmentation":
            return self._interactive(path, image, [a for a in annotations if a.get("segmentation")], rng)
        if self.task == "pose":
            return self._pose(path, image, annotations, rng)
        if self.task.startswith("in_context"):
            return self._in_context(image_id, path, image, annotations, rng)
        return self._detection(path, image, annotations, rng)

    def _in_context(self, image_id, path, image, annotations, rng) -> dict:
        """
        Examples then the query: other images holding the category, one of its objects marked in each; the answer
        names the category and finds all of them in the query image. With no other image of the category, the
        example is the query image itself.
        """
        if not annotations:  # nothing to find: fall back to asking for absent categories
            return self._detection(path, image, annotations, rng)
        category = rng.choice(sorted({a["category_id"] for a in annotations}))
        others = [other for other in self.images_by_category[category] if other != image_id] or [image_id]
        with_masks = self.task == "in_context_segmentation"
        images, regions = [], []
        for example in rng.sample(others, min(len(others), rng.randint(1, 2))):
            marked = rng.choice([a for a in self.annotations[example] if a["category_id"] == category])
            example_image = self.images[example]
            if with_masks:
                region = {"mask": _masks([marked], example_image, self.image_folder)[0].numpy().astype(bool)}
            else:
                x, y, w, h = marked["bbox"]
                region = {"box": [x, y, x + max(w, 1), y + max(h, 1)]}
            images.append(str(self.image_folder / example_image["file_name"]))
            regions.append([region])
        templates = IN_CONTEXT_SEGMENTATION_TEMPLATES if with_masks else IN_CONTEXT_TEMPLATES
        question = in_context_question(rng.choice(templates), len(images))
        name = self.categories[category]
        mine = [a for a in annotations if a["category_id"] == category]
        target = {"boxes": _boxes(mine, image), "category": name}
        if with_masks:
            target["masks"] = _masks(mine, image, self.image_folder)
        return conversation_sample(question, f"{name} [DET].", images + [path], self.task,
                                   regions=regions + [[]], targets=[target])

    def _detection(self, path, image, annotations, rng) -> dict:
        present = sorted({a["category_id"] for a in annotations})
        absent = [c for c in self.categories if c not in present]
        asked = present + rng.sample(absent, min(len(absent), rng.randint(0, 2)))
        rng.shuffle(asked)
        asked = asked[: self.max_categories]
        with_masks = self.task == "instance_segmentation"
        templates = SEGMENTATION_TEMPLATES if with_masks else DETECTION_TEMPLATES
        names = [self.categories[c] for c in asked]
        question = rng.choice(templates).replace("<class>", ", ".join(names))
        answer = ", ".join(f"{name} [DET]" for name in names) + "."
        targets = []
        for category in asked:
            mine = [a for a in annotations if a["category_id"] == category]
            target = {"boxes": _boxes(mine, image), "category": self.categories[category]}
            if with_masks:
                target["masks"] = _masks(mine, image, self.image_folder)
            targets.append(target)
        return conversation_sample(question, answer, [path], self.task, targets=targets)

    def _pose(self, path, image, annotations, rng) -> dict:
        with_keypoints = [a for a in annotations if a.get("num_keypoints", 0) > 0]
        category = rng.choice(sorted({a["category_id"] for a in with_keypoints}))
        people = [a for a in with_keypoints if a["category_id"] == category]
        name = self.categories.get(category, "person")
        question = rng.choice(POSE_TEMPLATES).replace("<class>", name)
        keypoints = torch.tensor([a["keypoints"] for a in people], dtype=torch.float32).view(len(people), -1, 3)
        keypoints[..., 0] /= image["width"]
        keypoints[..., 1] /= image["height"]
        target = {"boxes": _boxes(people, image), "keypoints": self._by_name(keypoints, category), "category": name}
        return conversation_sample(question, f"{name} [POSE].", [path], self.task, targets=[target])

    def _by_name(self, keypoints: torch.Tensor, category: int) -> torch.Tensor:
        """`(n, K_category, 3)` -> `(n, K_model, 3)`: each keypoint at its name's place; the model's other names
        get visibility 0 (they do not exist on this category: their positions are not trained)."""
        if self.target_keypoints is None:
            return keypoints
        names = self.category_keypoints.get(category, self.target_keypoints)
        laid_out = keypoints.new_zeros(len(keypoints), len(self.target_keypoints), 3)
        for index, name in enumerate(names):
            laid_out[:, self.target_keypoints.index(name)] = keypoints[:, index]
        return laid_out

    def _interactive(self, path, image, annotations, rng) -> dict:
        annotation = rng.choice(annotations)
        mask = _masks([annotation], image, self.image_folder)[0]
        kind = rng.choice(["box", "point", "mask"])
        if kind == "box":
            x, y, w, h = annotation["bbox"]
            region = {"box": [x, y, x + max(w, 1), y + max(h, 1)]}
        elif kind == "point":
            rows, columns = mask.nonzero(as_tuple=True)
            pick = rng.randrange(len(rows))
            region = {"point": [float(columns[pick]) + 0.5, float(rows[pick]) + 0.5]}
        else:
            region = {"mask": mask.numpy().astype(bool)}
        question = rng.choice(INTERACTIVE_TEMPLATES)
        return conversation_sample(
            question, "[SEG].", [path], self.task, regions=[[region]], targets=[{"mask": mask}]
        )


class ReferringSource:
    """
    Referring data as JSON lines: `{"image": "a.jpg", "expression": "...", "box": [x1, y1, x2, y2], "mask": ...,
    "category": "..."}` (box in pixels of the image; mask as a COCO polygon list or RLE).

    Tasks: `rec` (answer `<expression> <LOC>`, box target: u-LLaVA's box decoder), `grounding` (answer
    `<expression> [DET]`, the box as a one-object detection target named by the expression: VisionLLM v2's
    grounding through the object decoder), `res` (answer `<expression> [SEG]`, mask target),
    `region_caption` (the region as `<region>`, its `region_caption` or else the expression as answer),
    `region_classification` (the region
    as `<region>`, its category as answer; `category_set` names the closed set in the instruction).
    """

    tasks = REFERRING_TASKS

    def __init__(self, path: str, image_folder: str | None = None, task: str = "rec", category_set: str | None = None):
        if task not in self.tasks:
            raise ValueError(f"unknown referring task '{task}'; choose from {self.tasks}")
        lines = read_json_lines(path)
        self.records = [record for _, record in lines]
        self.image_folder = Path(image_folder or Path(path).parent)
        self.task = task
        self.category_set = category_set
        self.problems: list[DataProblem] = check_referring(lines, path, self.image_folder, task)
        raise_for_problems(self.problems)

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int, rng: random.Random) -> dict:
        record = self.records[index]
        path = str(self.image_folder / record["image"])
        expression = record["expression"]
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
        if self.task in ("rec", "grounding"):
            question = rng.choice(REC_TEMPLATES).format(expression=expression)
            x1, y1, x2, y2 = record["box"]
            box = [x1 / width, y1 / height, x2 / width, y2 / height]
            if self.task == "rec":
                return conversation_sample(question, f"{expression} <LOC>.", [path], self.task, targets=[{"box": box}])
            target = {"boxes": torch.tensor([box], dtype=torch.float32), "category": expression}
            return conversation_sample(question, f"{expression} [DET].", [path], self.task, targets=[target])
        if self.task == "res":
            question = rng.choice(RES_TEMPLATES).format(expression=expression)
            mask = _masks([{"segmentation": record["mask"]}], {"height": height, "width": width}, self.image_folder)[0]
            return conversation_sample(question, f"{expression} [SEG].", [path], self.task, targets=[{"mask": mask}])
        if "box" in record:
            region = {"box": record["box"]}
        else:
            mask = _masks([{"segmentation": record["mask"]}], {"height": height, "width": width}, self.image_folder)[0]
            region = {"mask": mask.numpy().astype(bool)}
        if self.task == "region_caption":
            question = region_caption_prompt(1, detailed=False, rng=rng)
            answer = record.get("region_caption", expression)
            return conversation_sample(question, answer, [path], self.task, regions=[[region]])
        question = region_classification_prompt(self.category_set, rng=rng)
        return conversation_sample(question, record["category"], [path], self.task, regions=[[region]])


class GenerationSource:
    """
    Image generation data as JSON lines (image paths relative to the image folder):

    - task `text_to_image`: `{"prompt": "a red circle", "image": "out.png"}`; the answer is `<prompt> [GEN]`;
    - task `image_editing`: `{"input_image": "in.png", "instruction": "make it blue", "image": "out.png"}`; the
      input is the sample's `<image>`, the answer `<instruction> [EDIT]`.

    The target holds the image to produce as a `(3, h, w)` tensor in [0, 1] and the prompt or instruction as
    `caption` (for the text-feature loss, see `CaptionFeatures`).
    """

    tasks = GENERATION_TASKS

    def __init__(self, path: str, image_folder: str | None = None, task: str = "text_to_image"):
        if task not in self.tasks:
            raise ValueError(f"unknown generation task '{task}'; choose from {self.tasks}")
        lines = read_json_lines(path)
        self.records = [record for _, record in lines]
        self.image_folder = Path(image_folder or Path(path).parent)
        self.task = task
        self.problems: list[DataProblem] = check_generation(lines, path, self.image_folder, task)
        raise_for_problems(self.problems)

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int, rng: random.Random) -> dict:
        record = self.records[index]
        text_key = "prompt" if self.task == "text_to_image" else "instruction"
        text = record[text_key].strip()
        target = {"image": _image_tensor(self.image_folder / record["image"]), "caption": text}
        if self.task == "text_to_image":
            question = rng.choice(GENERATION_TEMPLATES).format(prompt=text)
            return conversation_sample(question, f"{text.rstrip('.')} [GEN].", [], self.task, targets=[target])
        source = str(self.image_folder / record["input_image"])
        return conversation_sample(text, f"{text.rstrip('.')} [EDIT].", [source], self.task, targets=[target])


class DatasetSource:
    """
    Any `datasets.Dataset` (or indexable of dicts) with an image column, mapped by column names: either a
    `messages_column` in the chat format, or a `question_column` and an `answer_column`.
    """

    def __init__(
        self,
        dataset,
        image_column: str = "image",
        messages_column: str | None = None,
        question_column: str | None = None,
        answer_column: str | None = None,
        task: str = "conversation",
    ):
        if messages_column is None and (question_column is None or answer_column is None):
            raise ValueError("give messages_column, or both question_column and answer_column")
        self.dataset, self.task = dataset, task
        self.image_column, self.messages_column = image_column, messages_column
        self.question_column, self.answer_column = question_column, answer_column
        self.problems: list[DataProblem] = self._check_columns()
        raise_for_problems(self.problems)

    def _check_columns(self) -> list[DataProblem]:
        """The mapped columns exist (where the dataset names its columns) and it holds rows."""
        problems = ProblemList(f"dataset {type(self.dataset).__name__}")
        if not len(self.dataset):
            problems.error("holds no rows", "give a dataset with samples")
        names = getattr(self.dataset, "column_names", None)
        wanted = [self.image_column, self.messages_column, self.question_column, self.answer_column]
        for column in [c for c in wanted if c is not None and names is not None and c not in names]:
            problems.error(f"has no column '{column}' (columns: {', '.join(names)})",
                           "map the right columns (image_column=..., messages_column=... or question/answer_column)",
                           field=column)
        return problems

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int, rng: random.Random) -> dict:
        row = self.dataset[index]
        images = row[self.image_column]
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if self.messages_column is not None:
            return {"messages": list(row[self.messages_column]), "images": images, "task": self.task}
        return conversation_sample(row[self.question_column], row[self.answer_column], images, self.task)


class MixedTaskDataset(torch.utils.data.Dataset):
    """
    Item `i` is a list of `batch_size` samples from one source, the source drawn with the given ratios; all of
    it follows from `(seed, i)`, so any rank, worker or resumed run rebuilds the same item.

    Use with `per_device_train_batch_size=1`: each item is one device batch of one task group.
    """

    def __init__(
        self,
        sources: list,
        ratios: list[float] | None = None,
        batch_size: int = 1,
        length: int | None = None,
        seed: int = 0,
    ):
        if not sources:
            raise ValueError("give at least one data source")
        ratios = list(ratios) if ratios is not None else [float(len(s)) for s in sources]
        if len(ratios) != len(sources) or min(ratios) < 0 or sum(ratios) <= 0:
            raise ValueError(f"need one non-negative sampling ratio per source, got {ratios}")
        empty = [i for i, source in enumerate(sources) if not len(source)]
        if empty:
            raise ValueError(f"data sources {empty} hold no samples")
        self.sources, self.ratios, self.batch_size, self.seed = sources, ratios, batch_size, seed
        self.length = length if length is not None else max(1, sum(len(s) for s in sources) // batch_size)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> list[dict]:
        rng = random.Random(f"{self.seed}-{index}")
        source = rng.choices(self.sources, weights=self.ratios)[0]
        return [source.sample(rng.randrange(len(source)), rng) for _ in range(self.batch_size)]


def _boxes(annotations: list, image: dict) -> torch.Tensor:
    """COCO `[x, y, w, h]` pixels -> `(n, 4)` normalised xyxy."""
    boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).view(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes / torch.tensor([image["width"], image["height"]] * 2, dtype=torch.float32)


def _image_tensor(path: Path) -> torch.Tensor:
    """An image file -> `(3, h, w)` float tensor in [0, 1]."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)


def _masks(annotations: list, image: dict, folder=None) -> torch.Tensor:
    """
    Each annotation's `segmentation` (any form `data_formats.decode_mask` reads: COCO polygons, nested or flat, RLE,
    a mask image path relative to `folder`) -> `(n, height, width)` float masks.
    """
    height, width = image["height"], image["width"]
    masks = [
        torch.from_numpy(decode_mask(annotation["segmentation"], height, width, folder).astype(np.float32))
        for annotation in annotations
    ]
    return torch.stack(masks) if masks else torch.zeros(0, height, width)


__all__ = [
    "CocoSource",
    "ConversationSource",
    "DatasetSource",
    "GenerationSource",
    "MixedTaskDataset",
    "ReferringSource",
    "conversation_sample",
]
