"""Dynamic-resolution image processor: best aspect-ratio grid of square tiles plus a global view.

This file ships with every checkpoint (``trust_remote_code``): it imports only numpy, PIL, torch and
transformers.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(image) -> torch.Tensor:
    """
    Turn one image into a float tensor of shape (3, height, width) with values in [0, 1].

    Accepts a file path, a PIL image, a numpy array (HWC or HW; uint8 or float in [0, 1]) or a torch tensor
    (CHW or HW; uint8 or float in [0, 1]). Grayscale and RGBA are converted to RGB.

    Raises:
        TypeError: for anything that is not one of the above.
        ValueError: for an unreadable file, a wrong number of dimensions or channels, or zero pixels.
    """
    if isinstance(image, (str, os.PathLike)):
        image = _open_image_file(Path(image))
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image has zero pixels ({image.width}x{image.height})")
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1) / 255.0
    if isinstance(image, np.ndarray):
        array = image[:, :, None] if image.ndim == 2 else image
        if array.ndim != 3:
            raise ValueError(f"a numpy image must be HWC or HW, got shape {image.shape}")
        return _to_unit_rgb(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1), image.shape)
    if isinstance(image, torch.Tensor):
        tensor = image[None] if image.dim() == 2 else image
        if tensor.dim() != 3:
            raise ValueError(f"a torch image must be CHW or HW, got shape {tuple(image.shape)}")
        return _to_unit_rgb(tensor.detach().cpu(), tuple(image.shape))
    raise TypeError(
        f"an image must be a file path, PIL.Image, numpy array or torch tensor, got {type(image).__name__}"
    )


def _open_image_file(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except FileNotFoundError:
        raise ValueError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"could not read image file {path}: it is corrupt or not an image ({error})") from None


def _to_unit_rgb(chw: torch.Tensor, original_shape) -> torch.Tensor:
    channels, height, width = chw.shape
    if height == 0 or width == 0:
        raise ValueError(f"image has zero pixels (shape {tuple(original_shape)})")
    if channels not in (1, 3, 4):
        raise ValueError(f"an image needs 1, 3 or 4 channels, got {channels} (shape {tuple(original_shape)})")
    if chw.dtype == torch.uint8:
        chw = chw.float() / 255.0
    elif chw.is_floating_point():
        chw = chw.float()
    else:
        raise TypeError(f"image values must be uint8 or float in [0, 1], got {chw.dtype}")
    if channels == 1:
        chw = chw.expand(3, height, width)
    return chw[:3]


def default_tile_grids(min_tiles: int, max_tiles: int) -> list[list[int]]:
    """Every `[columns, rows]` grid with `min_tiles <= columns * rows <= max_tiles`, fewest tiles first."""
    grids = [
        [columns, rows]
        for columns in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= columns * rows <= max_tiles
    ]
    return sorted(grids, key=lambda grid: (grid[0] * grid[1], grid))


def select_tile_grid(width: int, height: int, grids: list[list[int]], tile_size: int) -> tuple[int, int]:
    """
    The grid whose aspect ratio is closest to the image's (in log space, so 2:1 and 1:2 are equally far
    from 1:1). Among equally close grids the larger one wins while the image still has more than half the
    pixels the larger grid would show, so small images are not blown up into many tiles.
    """
    image_log_ratio = math.log(width / height)
    best, best_distance = None, math.inf
    for columns, rows in sorted(grids, key=lambda grid: grid[0] * grid[1]):
        distance = abs(image_log_ratio - math.log(columns / rows))
        if distance < best_distance - 1e-9:
            best, best_distance = (columns, rows), distance
        elif abs(distance - best_distance) <= 1e-9 and width * height > 0.5 * columns * rows * tile_size**2:
            best = (columns, rows)
    return best


class VisionLLMImageProcessor(BaseImageProcessor):
    r"""
    Cuts each image into a grid of square tiles chosen from an aspect-ratio set, plus one global view.

    Args:
        tile_size (`int`, *optional*, defaults to 336):
            Side of a tile in pixels (the vision tower's input size).
        min_tiles (`int`, *optional*, defaults to 1):
            Fewest local tiles per image.
        max_tiles (`int`, *optional*, defaults to 4):
            Most local tiles per image; this is the visual-token budget.
        tile_grids (`list[list[int]]`, *optional*):
            Allowed `[columns, rows]` grids. Defaults to every grid within `[min_tiles, max_tiles]` tiles.
        use_global_view (`bool`, *optional*, defaults to `True`):
            Whether the whole image resized to one tile follows the local tiles.
        image_seq_length (`int`, *optional*, defaults to 576):
            LLM tokens per tile; the processor expands each `<image>` to `tiles * image_seq_length` tokens.
        image_mean (`list[float]`, *optional*, defaults to CLIP's mean):
            Per-channel mean used to normalise.
        image_std (`list[float]`, *optional*, defaults to CLIP's std):
            Per-channel standard deviation used to normalise.
        decoder_image_size (`int`, *optional*):
            Side of the square image the task decoders read (SAM's 1024, say); unset for a model without
            decoders. Decoder images are the whole image resized (not cropped) and ImageNet-normalised.

    Returns from `__call__` a `BatchFeature` with `pixel_values` of shape `(total_tiles, 3, tile, tile)`
    (each image's local tiles row by row, then its global view, images in order) and `image_grids` of shape
    `(num_images, 2)` holding `[columns, rows]` per image.
    """

    model_input_names = ["pixel_values", "image_grids"]

    def __init__(
        self,
        tile_size: int = 336,
        min_tiles: int = 1,
        max_tiles: int = 4,
        tile_grids: list[list[int]] | None = None,
        use_global_view: bool = True,
        image_seq_length: int = 576,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        decoder_image_size: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 1 <= min_tiles <= max_tiles:
            raise ValueError(f"need 1 <= min_tiles <= max_tiles, got {min_tiles} and {max_tiles}")
        self.tile_size = tile_size
        self.min_tiles = min_tiles
        self.max_tiles = max_tiles
        self.tile_grids = tile_grids
        self.use_global_view = use_global_view
        self.image_seq_length = image_seq_length
        self.image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)
        self.decoder_image_size = decoder_image_size

    @property
    def grids(self) -> list[list[int]]:
        return self.tile_grids or default_tile_grids(self.min_tiles, self.max_tiles)

    def num_tiles(self, grid: tuple[int, int]) -> int:
        """Tiles one image produces: its local grid plus the global view."""
        return grid[0] * grid[1] + int(self.use_global_view)

    def num_image_tokens(self, grid: tuple[int, int]) -> int:
        """LLM tokens one image with this grid takes."""
        return self.num_tiles(grid) * self.image_seq_length

    def tile(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Cut one (3, height, width) image in [0, 1] into normalised tiles; returns them and the grid."""
        _, height, width = image.shape
        columns, rows = select_tile_grid(width, height, self.grids, self.tile_size)
        size = self.tile_size
        resized = _resize(image, rows * size, columns * size)
        tiles = resized.unflatten(1, (rows, size)).unflatten(3, (columns, size))  # 3, rows, size, columns, size
        tiles = tiles.permute(1, 3, 0, 2, 4).reshape(rows * columns, 3, size, size)
        if self.use_global_view:
            tiles = torch.cat([tiles, _resize(image, size, size)[None]])
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return (tiles - mean) / std, (columns, rows)

    def decoder_images(self, images: list) -> torch.Tensor:
        """
        `(len(images), 3, size, size)` decoder inputs: each image (None gives a blank one) resized to
        `decoder_image_size` squared and ImageNet-normalised.
        """
        size = self.decoder_image_size
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        resized = [_resize(load_image(image), size, size) if image is not None else mean.expand(3, size, size)
                   for image in images]
        return (torch.stack(resized) - mean) / std

    def __call__(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)

    def preprocess(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Tile one image or a (possibly nested) list of images; see the class docstring for the output."""
        flat_images = flatten_images(images)
        if not flat_images:
            raise ValueError("no images given")
        all_tiles, grids = [], []
        for image in flat_images:
            tiles, grid = self.tile(load_image(image))
            all_tiles.append(tiles)
            grids.append(list(grid))
        data = {"pixel_values": torch.cat(all_tiles), "image_grids": torch.tensor(grids, dtype=torch.long)}
        return BatchFeature(data=data, tensor_type=return_tensors)


def flatten_images(images) -> list:
    """One image, a list of images or a per-sample list of lists, as one flat list in order."""
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in flatten_images(item)]
    return [images]


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if image.shape[1:] == (height, width):
        return image
    resized = F.interpolate(image[None], size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return resized[0].clamp(0.0, 1.0)


VisionLLMImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["VisionLLMImageProcessor", "default_tile_grids", "flatten_images", "load_image", "select_tile_grid"]
