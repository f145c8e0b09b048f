"""The images `visionllm-hf predict` runs over, read from the sources users have.

`read_inputs(source)` recognises:

- a folder of images (every file with an image suffix, recursively, sorted) or a glob (`photos/*.jpg`, sorted);
- a COCO JSON file (its `images` list, read from `images=` or an `images/` folder next to the file; its
  categories are the default categories and give the category ids of the COCO results);
- a JSON-lines file (`.jsonl`) of records `{"image": ..., "prompt": ..., "regions": [...], "categories": [...],
  "expression": ..., "id": ...}` (all but `image` optional; image paths relative to `images=` or the file's
  folder);
- a `datasets` dataset: a folder written by `save_to_disk`, or a hub name (`split=`, `image_column=`); the
  columns `prompt`, `regions`, `categories`, `expression`, `id` and `image_id` are read when present.

Per record values (`prompt`, `regions`, `categories`, `expression`) override the command line's. A record that
cannot be used (a JSON line that does not parse, no image) keeps its place in the input order with an `error`, so
the run reports it and goes on.

    >>> inputs = read_inputs("photos/")
    >>> [record.id for record in inputs.records]
    ['a.jpg', 'b.png', 'sub/c.jpg']
"""

import glob
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data_formats import decode_mask

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
RECORD_FIELDS = ("prompt", "regions", "categories", "expression")


@dataclass
class PredictionInput:
    """
    One image to predict on.

    Args:
        index (`int`): its place in the input order (0-based); outputs are written in this order.
        id (`str` or `int`): what names it in the outputs: the path relative to the folder, the COCO `file_name`,
            the record's `id` (else its `image`), or the dataset row.
        image: a file path, a `PIL.Image`, or a `DatasetImage` read when the image is needed.
        image_id (`int`): the COCO image id (the COCO input's, else `index + 1`).
        prompt, regions, categories, expression (*optional*): this image's own values, overriding the shared ones.
        error (`str`, *optional*): why the record cannot be used (reported per image; the run goes on).
    """

    index: int
    id: Any
    image: Any
    image_id: int
    prompt: str | None = None
    regions: list | None = None
    categories: list[str] | None = None
    expression: str | None = None
    error: str | None = None


@dataclass
class PredictionInputs:
    """
    What `read_inputs` found.

    Args:
        records (`list[PredictionInput]`): the images, in input order.
        folder (`Path`, *optional*): the folder relative paths start from (images, region mask files).
        categories (`list[dict]`, *optional*): a COCO input's categories (`{"id", "name"}`, by id).
    """

    records: list[PredictionInput]
    folder: Path | None = None
    categories: list[dict] | None = field(default=None)

    @property
    def category_names(self) -> list[str] | None:
        return None if self.categories is None else [category["name"] for category in self.categories]


@dataclass
class DatasetImage:
    """The image of one row of a `datasets` dataset, decoded when the prediction needs it."""

    dataset: Any
    row: int
    column: str
    folder: Path | None = None  # where a column of relative paths starts

    def __call__(self):
        value = self.dataset[self.row][self.column]
        if value is None:
            raise ValueError(f"row {self.row} has no image in column '{self.column}'")
        if isinstance(value, str) and self.folder is not None:
            return str(self.folder / value)
        return value


def read_inputs(
    source: str | Path,
    images: str | Path | None = None,
    image_column: str = "image",
    split: str | None = None,
) -> PredictionInputs:
    """
    The images of `source`, in input order (see the module docstring for the kinds recognised).

    Args:
        source (`str` or `Path`): a folder of images, a glob, a COCO JSON file, a JSON-lines file, a folder written
            by `datasets.Dataset.save_to_disk`, or a dataset name on the hub.
        images (`str` or `Path`, *optional*): the folder image paths of a COCO or JSON-lines file (or a dataset's
            path column) start from; defaults to `images/` next to a COCO file, the folder of a JSON-lines file.
        image_column (`str`, *optional*, defaults to `"image"`): the dataset column holding the images.
        split (`str`, *optional*): the dataset split (needed when a dataset has several).

    Raises:
        ValueError: a source of no known kind, a folder or glob with no images, a COCO file without `images`, a
            dataset without `image_column`.
    """
    text = str(source)
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return _read_dataset(_load_dataset_from_disk(path, split), image_column, images)
        return _read_files(sorted(p for p in path.rglob("*") if _is_image_file(p)), text, root=path)
    if path.is_file() and path.suffix == ".jsonl":
        return _read_json_lines(path, Path(images) if images else path.parent)
    if path.is_file() and path.suffix == ".json":
        return _read_coco(path, Path(images) if images else path.parent / "images")
    if glob.has_magic(text):
        return _read_files(sorted(Path(p) for p in glob.glob(text, recursive=True) if _is_image_file(Path(p))), text)
    if path.exists():
        raise ValueError(f"{source} is neither a folder of images, a COCO .json, a .jsonl file nor a saved dataset")
    if text.startswith(("/", ".", "~")) or path.suffix.lower() in (".json", ".jsonl", *IMAGE_SUFFIXES):
        raise ValueError(f"{source} not found")
    return _read_dataset(_load_hub_dataset(text, split), image_column, images)


def open_image(source) -> Image.Image:
    """
    One record's image as a PIL image: a file path, a `DatasetImage`, a `PIL.Image`, a numpy HWC array, or a
    dataset's undecoded `{"path", "bytes"}`. Raises `ValueError` for a file that is missing or cannot be read.
    """
    if isinstance(source, DatasetImage):
        source = source()
    if isinstance(source, dict) and ("path" in source or "bytes" in source):  # a dataset Image column not decoded
        source = source.get("bytes") or source.get("path")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        source = Path(source)
        if not source.is_file():
            raise ValueError(f"image file not found: {source}")
    if isinstance(source, np.ndarray):
        return Image.fromarray(source)
    if isinstance(source, Image.Image):
        return source
    try:
        with Image.open(source) as opened:
            opened.load()
            return opened.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"could not read image {source}: {error}") from None


def load_regions(regions: list | None, height: int, width: int, folder: Path | None = None) -> list | None:
    """
    A record's regions ready for the processor: masks given as COCO RLE, polygons or a mask file (relative to
    `folder`) decoded to `(height, width)` bool arrays; boxes, points, scribbles and polygons unchanged.
    """
    if regions is None:
        return None
    if not isinstance(regions, (list, tuple)):
        raise ValueError(f"regions must be a list of regions, got {type(regions).__name__}")
    return [_load_region(region, height, width, folder) for region in regions]


def _load_region(region, height: int, width: int, folder: Path | None):
    if not (isinstance(region, dict) and "mask" in region):
        return region
    mask = region["mask"]
    if isinstance(mask, (list, tuple)) and np.asarray(mask, dtype=object).shape == (height, width):
        return {"mask": np.asarray(mask, dtype=bool)}  # a mask written out as rows of 0 / 1
    if isinstance(mask, (dict, str, list, tuple)):
        return {"mask": decode_mask(mask, height, width, folder)}
    return region


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _read_files(paths: list[Path], source: str, root: Path | None = None) -> PredictionInputs:
    if not paths:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    records = [
        PredictionInput(index, (path.relative_to(root) if root else path).as_posix(), str(path), index + 1)
        for index, path in enumerate(paths)
    ]
    return PredictionInputs(records)


def _read_coco(path: Path, folder: Path) -> PredictionInputs:
    try:
        coco = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{path} is not a COCO file: it has no 'images' list")
    records = []
    for index, image in enumerate(coco["images"]):
        name = image.get("file_name") if isinstance(image, dict) else None
        image_id = image.get("id", index + 1) if isinstance(image, dict) else index + 1
        error = None if name else f"COCO image {index} has no 'file_name'"
        records.append(PredictionInput(index, name, str(folder / name) if name else None, image_id, error=error))
    categories = [{"id": c["id"], "name": c["name"]} for c in coco.get("categories") or []]
    return PredictionInputs(records, folder, sorted(categories, key=lambda c: c["id"]) or None)


def _read_json_lines(path: Path, folder: Path) -> PredictionInputs:
    records = []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for index, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            records.append(PredictionInput(index, None, None, index + 1, error=f"line {index + 1}: {error}"))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("image"), str) or not record["image"]:
            records.append(PredictionInput(index, None, None, index + 1, error=f"line {index + 1} has no 'image'"))
            continue
        own = {name: record.get(name) for name in RECORD_FIELDS}
        records.append(PredictionInput(index, record.get("id", record["image"]), str(folder / record["image"]),
                                       index + 1, **own))
    if not records:
        raise ValueError(f"{path} holds no records")
    return PredictionInputs(records, folder)


def _read_dataset(dataset, image_column: str, folder) -> PredictionInputs:
    if image_column not in dataset.column_names:
        raise ValueError(
            f"the dataset has no column '{image_column}' (columns: {', '.join(dataset.column_names)}); "
            "name the image column with --image-column"
        )
    present = [name for name in (*RECORD_FIELDS, "id", "image_id") if name in dataset.column_names]
    rows = dataset.select_columns(present).to_list() if present else [{} for _ in range(len(dataset))]
    images = dataset.select_columns([image_column])
    folder = Path(folder) if folder else None
    records = []
    for index, row in enumerate(rows):
        image_id = row.get("image_id") if isinstance(row.get("image_id"), int) else index + 1
        own = {name: row.get(name) for name in RECORD_FIELDS}
        records.append(PredictionInput(index, row.get("id", index), DatasetImage(images, index, image_column, folder),
                                       image_id, **own))
    return PredictionInputs(records, folder)


def _load_dataset_from_disk(path: Path, split: str | None):
    from datasets import load_from_disk

    return _one_split(load_from_disk(str(path)), split, str(path))


def _load_hub_dataset(name: str, split: str | None):
    try:
        from datasets import load_dataset
    except ImportError:
        raise ValueError(f"{name} is not a file, folder or glob, and `datasets` is not installed to load it") from None
    try:
        dataset = load_dataset(name, split=split) if split else load_dataset(name)
    except Exception as error:  # the hub, the network or the name: say what the source was taken for
        raise ValueError(f"{name} is not a file, folder or glob, and loading it as a dataset failed: {error}") from None
    return _one_split(dataset, split, name)


def _one_split(dataset, split: str | None, name: str):
    """A `Dataset` from a `Dataset` or `DatasetDict`: the split asked for, or the only one."""
    if not hasattr(dataset, "keys"):
        return dataset
    if split is None and len(dataset) == 1:
        return next(iter(dataset.values()))
    if split not in dataset:
        raise ValueError(f"{name} has the splits {', '.join(dataset)}: choose one with --split")
    return dataset[split]


__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetImage",
    "PredictionInput",
    "PredictionInputs",
    "load_regions",
    "open_image",
    "read_inputs",
]
