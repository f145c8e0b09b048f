"""Run a checkpoint over images in batches: one result per image, in input order, errors kept per image.

The images are asked a task by name (`processor(..., task=...)`, see `processing/tasks.py`): perception tasks get
their answer's structure (`circle [DET], square [DET].`) and the decoders run inside `generate`, as
`visionllm-hf demo` and `visionllm-hf eval` run them. Each result holds the post-processed answer (`text`,
`objects` in the image's pixels) and transformers' detection schema (`scores`, `labels`, `boxes`, with
`text_labels` and `id2label`), so tools made for transformers' detectors take it:

    >>> import supervision as sv
    >>> for result in predict(model, processor, ["a.jpg", "b.jpg"], task="detection", categories=["cat", "dog"]):
    ...     detections = sv.Detections.from_transformers(result, id2label=result["id2label"])
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from PIL import Image

from ..processing.post_processing import LABEL_TRIM
from ..processing.tasks import TASKS
from .inputs import PredictionInput, load_regions, open_image

CATEGORY_TASKS = ("detection", "instance_segmentation", "pose")
EXPRESSION_TASKS = ("grounding", "referring_segmentation")


@dataclass
class GenerationSettings:
    """How every batch is generated and post-processed (see `predict`)."""

    max_tiles: int | None = None
    max_new_tokens: int = 64
    threshold: float = 0.3
    nms_threshold: float | None = 0.5


@dataclass
class LoadedInput:
    """A record with its image read and its values resolved: what one sample of a processor call needs."""

    record: PredictionInput
    image: Image.Image
    regions: list | None
    categories: list[str] | None
    expression: str | None
    prompt: str | None


def task_name(task: str) -> str:
    """`task` as `processing/tasks.py` names it (`instance-segmentation` -> `instance_segmentation`)."""
    name = task.replace("-", "_")
    if name not in TASKS:
        raise ValueError(f"unknown task '{task}'; choose from {', '.join(TASKS)}")
    return name


def as_records(records: Iterable) -> list[PredictionInput]:
    """`PredictionInput`s as they are; image paths and images (PIL, numpy) numbered in order."""
    numbered = []
    for index, item in enumerate(records):
        if isinstance(item, PredictionInput):
            numbered.append(item)
        else:
            numbered.append(PredictionInput(index, str(item) if isinstance(item, str) else index, item, index + 1))
    return numbered


def predict(
    model,
    processor,
    records: Iterable,
    task: str,
    *,
    categories: list[str] | None = None,
    expression: str | None = None,
    prompt: str | None = None,
    batch_size: int = 8,
    max_tiles: int | None = None,
    max_new_tokens: int = 64,
    threshold: float = 0.3,
    nms_threshold: float | None = 0.5,
    folder=None,
) -> Iterator[dict]:
    r"""
    Ask `task` of every image and yield one dict per image, in input order.

    Args:
        model, processor: a VisionLLM checkpoint (`AutoModel` / `AutoProcessor`, `trust_remote_code=True`).
        records (iterable): `PredictionInput`s (`read_inputs(...).records`), or image paths / `PIL.Image`s / numpy
            arrays.
        task (`str`): a name of `processing/tasks.py`'s `TASKS` (`-` spellings accepted).
        categories (`list[str]`, *optional*): what `detection`, `instance_segmentation` and `pose` look for.
        expression (`str`, *optional*): what `grounding` / `referring_segmentation` find.
        prompt (`str`, *optional*): the question of `vqa` / `prompt`.
        batch_size (`int`, *optional*, defaults to 8): images per `generate` call (left-padded).
        max_tiles (`int`, *optional*): the visual-token budget given to the processor (its default if None).
        max_new_tokens (`int`, *optional*, defaults to 64): sampled tokens at most; a perception answer's forced
            structure always fits.
        threshold (`float`, *optional*, defaults to 0.3), nms_threshold (`float`, *optional*, defaults to 0.5):
            passed to `post_process_generation`.
        folder (`Path`, *optional*): where region mask files of the records start.

    A record's own `categories`, `expression`, `prompt` and `regions` override the shared ones.

    Yields:
        `dict` per image: `index`, `id`, `image` (the path, or None), `image_id`, `task`, `size` (`(height,
        width)`), `text`, `objects` (`post_process_generation`'s: `label`, `routing`, `score`, `box` xyxy pixels,
        `mask` bool array, `keypoints`), and transformers' detection schema over the objects with a box: `scores`
        (tensor), `labels` (int64 tensor: indices into `id2label`, the categories asked then any other label),
        `text_labels` (`list[str]`), `boxes` (`(n, 4)` tensor, xyxy pixels), `id2label`. An image that could not be
        read or predicted yields `{"index", "id", "image", "image_id", "error"}` instead, and the others go on.

    ```python
    >>> results = list(predict(model, processor, ["cat.jpg"], task="detection", categories=["cat"]))
    >>> results[0]["boxes"].shape, results[0]["text_labels"]
    (torch.Size([2, 4]), ['cat', 'cat'])
    ```
    """
    settings = GenerationSettings(max_tiles, max_new_tokens, threshold, nms_threshold)
    shared = {"categories": categories, "expression": expression, "prompt": prompt}
    for batch in predict_batches(model, processor, as_records(records), task_name(task), shared, settings, batch_size,
                                 folder):
        yield from batch


def predict_batches(
    model, processor, records: list[PredictionInput], task: str, shared: dict, settings: GenerationSettings,
    batch_size: int, folder=None,
) -> Iterator[list[dict]]:
    """`predict`, one list of results (and errors) per batch, so a writer can flush after each batch."""
    for start in range(0, len(records), batch_size):
        loaded, failed = [], []
        for record in records[start : start + batch_size]:
            try:
                loaded.append(load_input(record, shared, folder))
            except Exception as error:  # an unreadable image or bad record fails alone; the run goes on
                failed.append(error_result(record, error))
        results = predict_loaded(model, processor, loaded, task, settings) if loaded else []
        yield sorted(results + failed, key=lambda result: result["index"])


def load_input(record: PredictionInput, shared: dict, folder=None) -> LoadedInput:
    """Read a record's image and regions; its own values, else the shared ones."""
    if record.error:
        raise ValueError(record.error)
    image = open_image(record.image)
    regions = load_regions(record.regions, image.height, image.width, folder)
    own = {name: getattr(record, name) if getattr(record, name) is not None else shared.get(name)
           for name in ("categories", "expression", "prompt")}
    return LoadedInput(record, image, regions, **own)


def predict_loaded(model, processor, items: list[LoadedInput], task: str, settings: GenerationSettings) -> list[dict]:
    """One batch; when it fails, each image alone, so only the images at fault get an error."""
    try:
        return generate_results(model, processor, items, task, settings)
    except Exception as error:
        if len(items) == 1:
            return [error_result(items[0].record, error)]
        return [result for item in items for result in predict_loaded(model, processor, [item], task, settings)]


def generate_results(model, processor, items: list[LoadedInput], task: str, settings: GenerationSettings) -> list[dict]:
    """Process, generate and post-process one batch; the results in the images' pixels."""
    inputs = processor(images=[item.image for item in items], task=task, **_task_arguments(items, task),
                       **({"max_tiles": settings.max_tiles} if settings.max_tiles else {}))
    forced = inputs.get("forced_answer_ids")
    max_new_tokens = settings.max_new_tokens if forced is None else max(settings.max_new_tokens, forced.shape[1] + 1)
    inputs = inputs.to(device=model.device, dtype=model.dtype)
    with torch.inference_mode():
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    sizes = [(item.image.height, item.image.width) for item in items]
    if hasattr(generated, "results"):  # a model with decoders
        answers = processor.post_process_generation(generated, target_sizes=sizes, threshold=settings.threshold,
                                                    nms_threshold=settings.nms_threshold)
    else:
        sequences = generated if torch.is_tensor(generated) else generated.sequences
        texts = processor.post_process_image_text_to_text(sequences[:, inputs["input_ids"].shape[1] :])
        answers = [{"text": text, "objects": [], "images": []} for text in texts]
    return [result_of(item, task, answer, size) for item, answer, size in zip(items, answers, sizes, strict=True)]


def _task_arguments(items: list[LoadedInput], task: str) -> dict:
    """The processor's per-sample `categories`, `expression`, `text` and `regions` for this task."""
    arguments = {}
    if task in CATEGORY_TASKS:
        arguments["categories"] = [list(item.categories or []) for item in items]
    if task in EXPRESSION_TASKS:
        arguments["expression"] = [item.expression for item in items]
    if task in ("vqa", "prompt"):
        arguments["text"] = [item.prompt for item in items]
    if any(item.regions for item in items):
        arguments["regions"] = [list(item.regions or []) for item in items]
    return arguments


def result_of(item: LoadedInput, task: str, answer: dict, size: tuple[int, int]) -> dict:
    """One image's result: its answer and transformers' detection schema over the objects with a box."""
    record = item.record
    boxed = [obj for obj in answer["objects"] if obj["box"] is not None]
    asked = item.categories if task in CATEGORY_TASKS else [item.expression] if task in EXPRESSION_TASKS else []
    names = list(dict.fromkeys([str(name).strip(LABEL_TRIM) for name in asked or []] + [o["label"] for o in boxed]))
    return {
        "index": record.index,
        "id": record.id,
        "image": record.image if isinstance(record.image, str) else None,
        "image_id": record.image_id,
        "task": task,
        "size": size,
        "text": answer["text"],
        "objects": answer["objects"],
        "scores": torch.tensor([obj["score"] for obj in boxed], dtype=torch.float32),
        "labels": torch.tensor([names.index(obj["label"]) for obj in boxed], dtype=torch.int64),
        "text_labels": [obj["label"] for obj in boxed],
        "boxes": torch.tensor([obj["box"] for obj in boxed], dtype=torch.float32).reshape(-1, 4),
        "id2label": dict(enumerate(names)),
    }


def error_result(record: PredictionInput, error: Exception) -> dict:
    """What an image that could not be predicted yields: where it was, and why."""
    return {
        "index": record.index,
        "id": record.id,
        "image": record.image if isinstance(record.image, str) else None,
        "image_id": record.image_id,
        "error": f"{type(error).__name__}: {error}",
    }


__all__ = [
    "CATEGORY_TASKS",
    "GenerationSettings",
    "LoadedInput",
    "as_records",
    "error_result",
    "load_input",
    "predict",
    "predict_batches",
    "task_name",
]
