"""The forms users' data comes in, read one way by training, evaluation and prediction.

Instance masks (COCO `segmentation`, referring `mask`) come as

- COCO polygons, nested `[[x1, y1, x2, y2, ...], ...]` or one flat polygon `[x1, y1, x2, y2, ...]`;
- RLE `{"size": [height, width], "counts": ...}` with compressed (`str` / `bytes`) or uncompressed (a list of run
  lengths) counts;
- the path of a binary mask image, relative to the image folder (non-zero pixels are the mask).

    >>> from visionllm_hf.data_formats import decode_mask
    >>> decode_mask([0, 0, 4, 0, 4, 4, 0, 4], height=8, width=8).sum()
    16

Conversation records (LLaVA style) hold a counting question when tagged `"task": "counting"`, or else when the
question asks "how many" and the answer is a whole number (digits, or a number word up to twenty).
"""

import re
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
MASK_FORMS = ("polygons", "polygon", "rle", "file")


def mask_form(segmentation) -> str | None:
    """
    Which form a mask is given in: `"polygons"` (a list of lists), `"polygon"` (one flat list of numbers), `"rle"`
    (a dict) or `"file"` (a path); None for anything else. Says nothing of whether the values are valid.
    """
    if isinstance(segmentation, dict):
        return "rle"
    if isinstance(segmentation, (str, Path)):
        return "file"
    if isinstance(segmentation, (list, tuple)) and segmentation:
        if all(isinstance(polygon, (list, tuple)) for polygon in segmentation):
            return "polygons"
        if not any(isinstance(value, (list, tuple, dict, str)) for value in segmentation):
            return "polygon"
    return None


def decode_mask(segmentation, height: int, width: int, folder=None) -> np.ndarray:
    """
    An instance mask in any of the forms above as a `(height, width)` boolean array (pycocotools decodes the
    polygons and RLE).

    Arguments:
        segmentation (`list`, `dict` or `str`):
            COCO polygons (nested or one flat polygon), RLE (compressed or uncompressed counts), or a mask image's
            path.
        height (`int`), width (`int`): the image's size; an RLE or a mask file of another size is refused.
        folder (`str`, *optional*): the folder a relative mask file path starts from (the image folder).
    """
    form = mask_form(segmentation)
    if form == "file":
        return _mask_file(Path(folder or ".") / segmentation, height, width)
    if form in ("polygons", "polygon"):
        polygons = segmentation if form == "polygons" else [segmentation]
        rle = coco_mask.merge(coco_mask.frPyObjects([list(map(float, p)) for p in polygons], height, width))
    elif form == "rle":
        rle = _rle(segmentation, height, width)
    else:
        raise ValueError(f"a mask must be COCO polygons, RLE or a mask image path, not {type(segmentation).__name__}")
    return coco_mask.decode(rle).astype(bool)


def _rle(segmentation: dict, height: int, width: int) -> dict:
    size = list(segmentation.get("size", []))
    if size != [height, width]:
        raise ValueError(f"an RLE of size {size} for an image of [height, width] [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, (list, tuple)):
        return coco_mask.frPyObjects({"size": size, "counts": list(counts)}, height, width)
    return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _mask_file(path: Path, height: int, width: int) -> np.ndarray:
    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA", "PA"):  # transparency is no part of the mask
            image = image.convert(image.mode[:-1])
        pixels = np.asarray(image)
    if pixels.shape[:2] != (height, width):
        raise ValueError(f"the mask image {path} is {pixels.shape[1]}x{pixels.shape[0]} pixels, its image "
                         f"{width}x{height}")
    return pixels.any(axis=-1) if pixels.ndim == 3 else pixels != 0


def question_and_answer(record: dict) -> tuple[str, str] | None:
    """A conversation record's first question and the answer that follows it (`<image>` dropped), or None."""
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list) or len(turns) < 2:
        return None
    question, answer = turns[0], turns[1]
    if not (isinstance(question, dict) and isinstance(answer, dict)):
        return None
    if not (isinstance(question.get("value"), str) and isinstance(answer.get("value"), str)):
        return None
    return question["value"].replace("<image>\n", "").replace("<image>", "").strip(), answer["value"]


def is_whole_number(text: str) -> bool:
    """`"3"`, `"12."`, `"Four"`: digits or a number word up to twenty, once punctuation is stripped."""
    word = re.sub(r"[^\w\s]", "", text.lower()).strip()
    return word.isdigit() or word in NUMBER_WORDS


def is_counting_question(record: dict) -> bool:
    """
    Whether a conversation record asks to count: tagged `"task": "counting"`, or else its first question asks
    "how many" and its answer is a whole number.
    """
    pair = question_and_answer(record)
    if pair is None:
        return False
    if record.get("task") == "counting":
        return True
    question, answer = pair
    return "how many" in question.lower() and is_whole_number(answer)


__all__ = [
    "MASK_FORMS",
    "NUMBER_WORDS",
    "decode_mask",
    "is_counting_question",
    "is_whole_number",
    "mask_form",
    "question_and_answer",
]
