"""What the page accepts, checked before the model runs, with a message that says what to do instead.

Every function here raises `ValueError` with a sentence meant for the page; the page shows it and keeps serving.
"""

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .tasks import CHAT, TASKS_BY_NAME

MIN_SIDE = 16  # smaller images hold nothing to see (the processor takes them, the answer would be noise)
MAX_SIDE = 4096  # larger images are refused: downscale them (the model sees a few tiles anyway)
READABLE = "PNG, JPEG, WebP, BMP, GIF or TIFF"


def read_upload(path: str | Path) -> Image.Image:
    """
    The uploaded file as an RGB image (EXIF rotation applied), after checking its size from the file's header
    (so a huge image is refused before it is decoded).

    Raises:
        ValueError: not an image file, an image smaller than `MIN_SIDE` or larger than `MAX_SIDE` pixels a side,
            or a file that cannot be decoded.
    """
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below by its size
            with Image.open(path) as opened:
                check_image_size(opened.width, opened.height, name)
                return ImageOps.exif_transpose(opened).convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"{name} is not an image this app can read: upload a {READABLE} file") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{name} is far too large to open: {_largest()}") from None
    except (OSError, SyntaxError) as error:
        raise ValueError(f"could not read {name}: it is damaged or not an image ({error})") from None


def check_image_size(width: int, height: int, name: str = "the image"):
    """Raises `ValueError` for an image under `MIN_SIDE` or over `MAX_SIDE` pixels a side."""
    if min(width, height) < MIN_SIDE:
        raise ValueError(
            f"{name} is {width}x{height} pixels, too small to see anything in: upload an image of at least "
            f"{MIN_SIDE}x{MIN_SIDE} pixels"
        )
    if max(width, height) > MAX_SIDE:
        raise ValueError(f"{name} is {width}x{height} pixels: {_largest()}")


def _largest() -> str:
    return f"this app takes images up to {MAX_SIDE} pixels a side; downscale it first"


def parse_categories(text: str | None) -> list[str]:
    """Comma-separated names, trimmed, without empties or repeats (`"circle, square,"` -> `["circle", "square"]`)."""
    return list(dict.fromkeys(name.strip() for name in (text or "").split(",") if name.strip()))


def check_request(task: str, image, text: str | None, categories: list[str], expression: str | None, region) -> None:
    """
    Raises `ValueError` when `task` lacks what it needs: an image (every task but text to image), a question or
    instruction, categories, an expression, or a visual prompt.
    """
    app_task = TASKS_BY_NAME.get(task)
    if app_task is None:
        raise ValueError(f"choose a task first (got {task!r})")
    if app_task.needs_image and image is None:
        raise ValueError(f"upload an image or pick an example first: {app_task.label} needs an image")
    if app_task.needs == "text" and not (text or "").strip():
        what = "question" if task == CHAT else "instruction" if task == "image_editing" else "description"
        raise ValueError(f"type a {what} first: {app_task.label} needs one")
    if app_task.needs == "categories" and not categories:
        raise ValueError(f"{app_task.label} needs the categories to find, separated by commas (e.g. circle, square)")
    if app_task.needs == "expression" and not (expression or "").strip():
        raise ValueError(f"{app_task.label} needs an expression: describe the object (e.g. the red circle)")
    if app_task.needs == "region" and region is None:
        raise ValueError(
            f"{app_task.label} needs a visual prompt: click two opposite corners of a box on the image "
            "(or choose point and click once)"
        )


__all__ = ["MAX_SIDE", "MIN_SIDE", "check_image_size", "check_request", "parse_categories", "read_upload"]
