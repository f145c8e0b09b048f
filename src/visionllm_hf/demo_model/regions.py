"""Visual prompts -> binary masks aligned with the global view (the whole image resized to one tile).

A region is a dict with exactly one of these keys (coordinates in pixels of the original image, x then y):

- `{"box": [x1, y1, x2, y2]}`: the pixels whose centres lie inside the box;
- `{"point": [x, y]}`: the feature cell (one vision patch) containing the point;
- `{"scribble": [[x, y], ...]}`: a polyline of at least 2 points, one feature cell wide;
- `{"polygon": [[x, y], ...]}`: a filled polygon of at least 3 points;
- `{"mask": array}`: a binary mask of the image's height x width (numpy, torch or PIL); a bare 2-D array is
  read as a mask too.

This file ships with every checkpoint (``trust_remote_code``): it imports only numpy, PIL and torch.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

REGION_KINDS = ("box", "point", "scribble", "polygon", "mask")


def is_region(value) -> bool:
    """Whether `value` is one region (as opposed to a list of regions)."""
    return isinstance(value, (dict, np.ndarray, torch.Tensor, Image.Image))


def rasterize_region(region, image_size: tuple[int, int], tile_size: int, cell_size: float, where: str) -> torch.Tensor:
    """
    Turn one region into a `(tile_size, tile_size)` bool mask over the global view.

    Args:
        region: see the module docstring.
        image_size (`tuple[int, int]`): `(height, width)` of the original image.
        tile_size (`int`): side of the global view.
        cell_size (`float`): side of one vision feature cell in global-view pixels (tile_size / feature grid).
        where (`str`): names the region in error messages, e.g. `"sample 0, region 1"`.

    Raises:
        ValueError: unknown kind, wrong shape, coordinates outside the image, or an empty region.
    """
    kind, value = split_region(region, where)
    height, width = image_size
    scale = torch.tensor([tile_size / width, tile_size / height])
    if kind == "mask":
        mask = _resize_mask(_as_mask_array(value, image_size, where), tile_size)
    else:
        points = _as_points(value, kind, where)
        _check_inside(points, width, height, kind, where)
        points = points * scale
        mask = _DRAW[kind](points, tile_size, cell_size)
    if not mask.any():
        raise ValueError(f"{where}: the {kind} covers no pixel")
    return mask


def split_region(region, where: str) -> tuple[str, object]:
    """`(kind, value)` of one region; `where` names it in the errors (unknown kind, not a region)."""
    if isinstance(region, (np.ndarray, torch.Tensor, Image.Image)):
        return "mask", region
    if not isinstance(region, dict):
        raise TypeError(f"{where}: a region must be a dict such as {{'box': [x1, y1, x2, y2]}} or a 2-D mask")
    kinds = [key for key in region if key in REGION_KINDS]
    if len(kinds) != 1:
        raise ValueError(f"{where}: a region needs exactly one of {REGION_KINDS}, got keys {sorted(region)}")
    return kinds[0], region[kinds[0]]


def _as_points(value, kind: str, where: str) -> torch.Tensor:
    try:
        points = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: the {kind} must hold numbers, got {value!r}") from None
    if not torch.isfinite(points).all():
        raise ValueError(f"{where}: the {kind} holds a non-finite coordinate (NaN or inf): {points.tolist()}")
    expected = {"box": (4,), "point": (2,)}.get(kind)
    if expected is not None and tuple(points.shape) != expected:
        raise ValueError(f"{where}: a {kind} needs {expected[0]} numbers, got shape {tuple(points.shape)}")
    if kind == "box":
        if points[2] <= points[0] or points[3] <= points[1]:
            raise ValueError(f"{where}: a box needs x2 > x1 and y2 > y1, got {points.tolist()}")
        return points.view(2, 2)
    if kind == "point":
        return points.view(1, 2)
    least = 2 if kind == "scribble" else 3
    if points.dim() != 2 or points.shape[1] != 2 or points.shape[0] < least:
        raise ValueError(f"{where}: a {kind} needs at least {least} [x, y] points, got shape {tuple(points.shape)}")
    return points


def _check_inside(points: torch.Tensor, width: int, height: int, kind: str, where: str):
    outside = (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
    if outside.any():
        raise ValueError(
            f"{where}: the {kind} {points.flatten().tolist()} lies outside the {width}x{height} image"
        )


def _draw_box(corners: torch.Tensor, tile_size: int, cell_size: float) -> torch.Tensor:
    centres = torch.arange(tile_size, dtype=torch.float64) + 0.5
    (x1, y1), (x2, y2) = corners.tolist()
    columns = (centres >= x1) & (centres < x2)
    rows = (centres >= y1) & (centres < y2)
    if not columns.any():  # thinner than a pixel: keep the pixel column it falls in
        columns[min(int((x1 + x2) / 2), tile_size - 1)] = True
    if not rows.any():
        rows[min(int((y1 + y2) / 2), tile_size - 1)] = True
    return rows[:, None] & columns[None, :]


def _draw_point(point: torch.Tensor, tile_size: int, cell_size: float) -> torch.Tensor:
    x, y = point[0].tolist()
    left = min(math.floor(x / cell_size), math.ceil(tile_size / cell_size) - 1) * cell_size
    top = min(math.floor(y / cell_size), math.ceil(tile_size / cell_size) - 1) * cell_size
    return _draw_box(torch.tensor([[left, top], [left + cell_size, top + cell_size]]), tile_size, cell_size)


def _draw_scribble(points: torch.Tensor, tile_size: int, cell_size: float) -> torch.Tensor:
    canvas = Image.new("L", (tile_size, tile_size), 0)
    ImageDraw.Draw(canvas).line([tuple(p) for p in points.tolist()], fill=1, width=max(1, round(cell_size)))
    return torch.from_numpy(np.asarray(canvas, dtype=bool).copy())


def _draw_polygon(points: torch.Tensor, tile_size: int, cell_size: float) -> torch.Tensor:
    canvas = Image.new("L", (tile_size, tile_size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=1, outline=1)
    return torch.from_numpy(np.asarray(canvas, dtype=bool).copy())


_DRAW = {"box": _draw_box, "point": _draw_point, "scribble": _draw_scribble, "polygon": _draw_polygon}


def _as_mask_array(value, image_size: tuple[int, int], where: str) -> torch.Tensor:
    if isinstance(value, Image.Image):
        value = np.asarray(value.convert("L"))
    mask = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if tuple(mask.shape) != tuple(image_size):
        raise ValueError(
            f"{where}: a mask must have the image's height x width {tuple(image_size)}, got {tuple(mask.shape)}"
        )
    if not mask.any():
        raise ValueError(f"{where}: the mask is empty")
    return mask > 0


def _resize_mask(mask: torch.Tensor, tile_size: int) -> torch.Tensor:
    """Area-resize to the tile; a pixel is in when at least half covered, and a thin mask keeps its touched pixels."""
    coverage = F.interpolate(mask[None, None].float(), size=(tile_size, tile_size), mode="area")[0, 0]
    resized = coverage >= 0.5
    return resized if resized.any() else coverage > 0


__all__ = ["REGION_KINDS", "is_region", "rasterize_region", "split_region"]
