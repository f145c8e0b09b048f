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
from transformers.processing_utils import ImagesKwargs

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionLLMImagesKwargs(ImagesKwargs, total=False):
    """
    Per-call image options (`processor(..., max_tiles=1)` or `images_kwargs={...}`). Honoured: `do_rescale`,
    `rescale_factor`, `do_normalize`, `image_mean`, `image_std`, and the tiling budget `min_tiles` / `max_tiles`.
    Other standard image options (`size`, `crop_size`, `do_resize`, ...) do not apply to tiling and raise.
    """

    min_tiles: int | None
    max_tiles: int | None


CALL_OPTIONS = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std", "min_tiles", "max_tiles")
IGNORABLE_OPTIONS = ("return_tensors", "device", "do_convert_rgb", "data_format", "input_data_format")


MAX_PIXELS = 8192 * 8192  # larger images are refused: downscale them first (a float copy would take 800 MB)
FLOAT_TOLERANCE = 1e-3  # float pixels may overshoot [0, 1] by this much (resampling ringing)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def load_image(image, rescale_factor: float = 1 / 255) -> torch.Tensor:
    """
    Turn one image into a float tensor of shape (3, height, width) with values in [0, 1].

    Accepts a file path or http(s) URL, a PIL image (any mode: 16-bit and 32-bit integer images are scaled from 0..65535, float
    `F` images must hold values in [0, 1]), a numpy array (HWC or HW) or a torch tensor (CHW or HW). Arrays and
    tensors hold uint8 (or other integers in 0..255), uint16 (0..65535) or floats in [0, 1]. Grayscale, RGBA and
    other colour modes are converted to RGB. 8-bit values are multiplied by `rescale_factor` (1 / 255 maps them
    to [0, 1]).

    Raises:
        TypeError: for anything that is not one of the above, or an unsupported value type (bool, complex).
        ValueError: for an unreadable file, a wrong number of dimensions or channels, zero pixels, more than
            `MAX_PIXELS` pixels, non-finite values (NaN, inf), or values outside the range their type allows.
    """
    if isinstance(image, str) and image.startswith(("http://", "https://")):
        image = _fetch_image(image)
    elif isinstance(image, (str, os.PathLike)):
        image = _open_image_file(Path(image))
    if isinstance(image, Image.Image):
        _check_size(image.height, image.width, f"{image.width}x{image.height} {image.mode} image")
        return _pil_to_unit_rgb(image, rescale_factor)
    if isinstance(image, np.ndarray):
        array = image[:, :, None] if image.ndim == 2 else image
        if array.ndim != 3:
            raise ValueError(f"a numpy image must be HWC or HW, got shape {image.shape}")
        if array.dtype.byteorder not in ("=", "|"):
            array = array.astype(array.dtype.newbyteorder("="))
        if array.dtype == np.uint16:  # torch has no uint16 arithmetic on every version
            chw = torch.from_numpy(np.ascontiguousarray(array.astype(np.int32))).permute(2, 0, 1)
            return _to_unit_rgb(chw, image.shape, 1 / 65535, integer_max=65535)
        return _to_unit_rgb(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1), image.shape, rescale_factor)
    if isinstance(image, torch.Tensor):
        tensor = image[None] if image.dim() == 2 else image
        if tensor.dim() != 3:
            raise ValueError(f"a torch image must be CHW or HW, got shape {tuple(image.shape)}")
        if tensor.dtype == torch.uint16:
            return _to_unit_rgb(tensor.detach().cpu().int(), tuple(image.shape), 1 / 65535, integer_max=65535)
        return _to_unit_rgb(tensor.detach().cpu(), tuple(image.shape), rescale_factor)
    raise TypeError(
        f"an image must be a file path, PIL.Image, numpy array or torch tensor, got {type(image).__name__}"
    )


def _check_size(height: int, width: int, what: str):
    if height == 0 or width == 0:
        raise ValueError(f"image has zero pixels ({what})")
    if height * width > MAX_PIXELS:
        raise ValueError(
            f"image too large: {what} has {height * width:,} pixels, more than {MAX_PIXELS:,} (8192x8192); "
            "downscale it first (the processor resizes every image to at most max_tiles tiles anyway)"
        )


def _pil_to_unit_rgb(image: Image.Image, rescale_factor: float) -> torch.Tensor:
    """A PIL image of any mode as (3, h, w) floats in [0, 1]; 16/32-bit and float modes keep their precision."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(
                f"a {image.mode} PIL image holds values from {values.min()} to {values.max()}; integer images are "
                "read as 0..65535 (16-bit): convert it to 8-bit ('L' / 'RGB') or to float in [0, 1] first"
            )
        return _to_unit_rgb(torch.from_numpy(values.astype(np.float32) / 65535)[None], image.size[::-1], 1.0)
    if image.mode == "F":
        return _to_unit_rgb(torch.from_numpy(np.asarray(image, dtype=np.float32).copy())[None], image.size[::-1], 1.0)
    try:
        rgb = image.convert("RGB")
    except ValueError as error:
        raise ValueError(f"a PIL image of mode {image.mode} cannot be converted to RGB ({error})") from None
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
    return _contiguous_float(pixels).mul_(rescale_factor)


def _fetch_image(url: str) -> Image.Image:
    """An image from a URL, fetched by transformers' own loader (chat messages may name images by `url`)."""
    from transformers.image_utils import load_image as fetch

    try:
        return fetch(url)
    except Exception as error:  # network, HTTP status or decoding: all mean the same to the user
        raise ValueError(f"could not fetch the image at {url}: {error}") from None


def _open_image_file(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except FileNotFoundError:
        raise ValueError(f"image file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"image path is a folder, not an image file: {path}") from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"image file {path} is too large to open safely ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"could not read image file {path}: it is corrupt or not an image ({error})") from None


def _to_unit_rgb(chw: torch.Tensor, original_shape, rescale_factor: float, integer_max: int = 255) -> torch.Tensor:
    """
    (channels, h, w) of any supported dtype -> (3, h, w) floats: integers (0..`integer_max`) times
    `rescale_factor`, floats checked to lie in [0, 1].
    """
    channels, height, width = chw.shape
    _check_size(height, width, f"shape {tuple(original_shape)}")
    if channels not in (1, 3, 4):
        raise ValueError(f"an image needs 1, 3 or 4 channels, got {channels} (shape {tuple(original_shape)})")
    if chw.dtype == torch.bool or chw.is_complex():
        raise TypeError(f"image values must be integers (0..255 or 0..65535) or floats in [0, 1], got {chw.dtype}")
    if chw.is_floating_point():
        chw = _contiguous_float(chw)
        _check_float_values(chw, original_shape)
    else:
        if chw.dtype != torch.uint8 or integer_max < 255:  # uint8 holds 0..255 by construction
            low, high = int(chw.min()), int(chw.max())
            if low < 0 or high > integer_max:
                raise ValueError(
                    f"integer image values must lie in 0..{integer_max}, these go from {low} to {high} (shape "
                    f"{tuple(original_shape)}): scale them to 8-bit, or pass floats in [0, 1]"
                )
        chw = _contiguous_float(chw).mul_(rescale_factor)
    if channels == 1:
        chw = chw.expand(3, height, width)
    return chw[:3]


def _contiguous_float(chw: torch.Tensor) -> torch.Tensor:
    """A float32 copy in channels-first memory order, made in one pass (the resize is ~1.7x faster on it than on
    the channel-interleaved layout of decoded images)."""
    return torch.empty(chw.shape, dtype=torch.float32).copy_(chw)


def _check_float_values(chw: torch.Tensor, original_shape):
    finite = torch.isfinite(chw)
    if not finite.all():
        raise ValueError(
            f"the image holds {int((~finite).sum())} non-finite values (NaN or inf) (shape {tuple(original_shape)}); "
            "every pixel must be a number in [0, 1]"
        )
    low, high = (float(value) for value in torch.aminmax(chw))
    if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
        hint = "values in 0..255 must be uint8 or divided by 255" if high > 1 + FLOAT_TOLERANCE else "clip them"
        raise ValueError(
            f"float image values must lie in [0, 1], these go from {low:.4g} to {high:.4g} (shape "
            f"{tuple(original_shape)}): {hint}"
        )


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
    valid_kwargs = VisionLLMImagesKwargs
    rescale_factor = 1 / 255

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
        return self.grids_within(self.min_tiles, self.max_tiles)

    def grids_within(self, min_tiles: int, max_tiles: int) -> list[list[int]]:
        """The aspect-ratio set, limited to grids of `min_tiles..max_tiles` tiles (a per-call budget)."""
        if not 1 <= min_tiles <= max_tiles:
            raise ValueError(f"need 1 <= min_tiles <= max_tiles, got {min_tiles} and {max_tiles}")
        if self.tile_grids is None:
            return default_tile_grids(min_tiles, max_tiles)
        grids = [grid for grid in self.tile_grids if min_tiles <= grid[0] * grid[1] <= max_tiles]
        if not grids:
            raise ValueError(f"no grid of tile_grids {self.tile_grids} has {min_tiles} to {max_tiles} tiles")
        return grids

    def num_tiles(self, grid: tuple[int, int]) -> int:
        """Tiles one image produces: its local grid plus the global view."""
        return grid[0] * grid[1] + int(self.use_global_view)

    def num_image_tokens(self, grid: tuple[int, int]) -> int:
        """LLM tokens one image with this grid takes."""
        return self.num_tiles(grid) * self.image_seq_length

    def tile(
        self, image: torch.Tensor, grids: list[list[int]] | None = None, mean=None, std=None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """
        Cut one (3, height, width) image in [0, 1] into tiles normalised with `mean` and `std` (the processor's by
        default; None skips normalisation when given as `mean=False`); returns them and the grid.
        """
        _, height, width = image.shape
        columns, rows = select_tile_grid(width, height, grids or self.grids, self.tile_size)
        size = self.tile_size
        value_range = torch.aminmax(image)  # once for both resizes
        resized = _resize(image, rows * size, columns * size, value_range)
        tiles = resized.unflatten(1, (rows, size)).unflatten(3, (columns, size))  # 3, rows, size, columns, size
        tiles = tiles.permute(1, 3, 0, 2, 4).reshape(rows * columns, 3, size, size)
        if self.use_global_view:
            tiles = torch.cat([tiles, _resize(image, size, size, value_range)[None]])
        return self._normalise(tiles, mean, std), (columns, rows)

    def video_pixel_values(self, videos: list[list[torch.Tensor]], **kwargs) -> torch.Tensor:
        """
        `(num_videos, T, 3, tile, tile)` for videos given as lists of T loaded frames (`(3, height, width)` in
        [0, 1]): each frame resized whole to one tile (a frame takes no local tiles: u-LLaVA reads frames at the
        tower's resolution) and normalised as the per-call options say, like image tiles.
        """
        options = self._call_options(kwargs)
        normalise = options.get("do_normalize", True)
        mean, std = (options.get("image_mean"), options.get("image_std")) if normalise else (False, False)
        size = self.tile_size
        return torch.stack([
            self._normalise(torch.stack([_resize(frame, size, size) for frame in frames]), mean, std)
            for frames in videos
        ])

    def _normalise(self, tiles: torch.Tensor, mean, std) -> torch.Tensor:
        if mean is False:
            return tiles
        mean = torch.tensor(self.image_mean if mean is None else _per_channel(mean, "image_mean")).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std if std is None else _per_channel(std, "image_std")).view(1, 3, 1, 1)
        return (tiles - mean) / std

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
        """
        Tile one image or a (possibly nested) list of images; see the class docstring for the output. Keyword
        arguments are the per-call options of [`VisionLLMImagesKwargs`].
        """
        flat_images = flatten_images(images)
        if not flat_images:
            raise ValueError("no images given")
        loaded = [self.load(image, **kwargs) for image in flat_images]
        return self.tile_loaded(loaded, return_tensors=return_tensors, **kwargs)

    def tile_loaded(self, images: list[torch.Tensor], return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """`preprocess` for images already loaded by `load` (with the same options), as the processor does."""
        options = self._call_options(kwargs)
        grids = self.grids_within(options.get("min_tiles", self.min_tiles), options.get("max_tiles", self.max_tiles))
        normalise = options.get("do_normalize", True)
        mean, std = (options.get("image_mean"), options.get("image_std")) if normalise else (False, False)
        all_tiles, image_grids = [], []
        for image in images:
            tiles, grid = self.tile(image, grids, mean, std)
            all_tiles.append(tiles)
            image_grids.append(list(grid))
        data = {"pixel_values": torch.cat(all_tiles), "image_grids": torch.tensor(image_grids, dtype=torch.long)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def load(self, image, **kwargs) -> torch.Tensor:
        """One image as a `(3, height, width)` float tensor, integer values rescaled as the per-call options say."""
        options = self._call_options(kwargs)
        rescale_factor = options.get("rescale_factor", self.rescale_factor) if options.get("do_rescale", True) else 1.0
        return load_image(image, rescale_factor)

    @staticmethod
    def _call_options(kwargs: dict) -> dict:
        """The set per-call options; an option that does not apply to tiling raises instead of being ignored."""
        options = {key: value for key, value in kwargs.items() if value is not None}
        unsupported = sorted(set(options) - set(CALL_OPTIONS) - set(IGNORABLE_OPTIONS))
        if unsupported:
            raise ValueError(
                f"image options {unsupported} do not apply to VisionLLM's tiling (every tile is tile_size squared, "
                f"cut from the aspect-ratio grid); supported per call: {', '.join(CALL_OPTIONS)}"
            )
        if options.get("do_convert_rgb") is False:
            raise ValueError("do_convert_rgb=False is not supported: the vision tower reads 3-channel RGB tiles")
        return {key: value for key, value in options.items() if key in CALL_OPTIONS}


def flatten_images(images) -> list:
    """One image, a list of images or a per-sample list of lists, as one flat list in order."""
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in flatten_images(item)]
    return [images]


def _resize(image: torch.Tensor, height: int, width: int, value_range=None) -> torch.Tensor:
    """Bicubic, antialiased, in float32; `value_range` is the image's `(min, max)` when already known."""
    if image.shape[1:] == (height, width):
        return image
    resized = F.interpolate(image[None], size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    low, high = value_range if value_range is not None else torch.aminmax(image)
    return resized[0].clamp(low, high)  # bicubic overshoot stays within the image's own range


def _per_channel(value, name: str) -> list[float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{name} needs one value or three (per RGB channel), got {value!r}")
    return values


VisionLLMImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "VisionLLMImageProcessor",
    "VisionLLMImagesKwargs",
    "default_tile_grids",
    "flatten_images",
    "load_image",
    "select_tile_grid",
]
