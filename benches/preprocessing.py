"""Image preprocessing throughput: our tiling image processor against transformers' torchvision-backend one.

Both get the same PIL images (sizes from 336x336 to 1280x960, several aspect ratios) and do the same resizes:

- 1 tile: each image resized to one 336x336 tile (bicubic, antialiased), rescaled and CLIP-normalised; ours with
  `max_tiles=1` and no global view, transformers' `CLIPImageProcessor` (the torchvision backend, transformers'
  "fast" processor) with `size={"height": 336, "width": 336}` and no center crop;
- v2 tiling: ours as VisionLLM v2 tiles (best grid of up to 4 tiles of 336 plus a global view); transformers'
  processor resizes each image to the same grid size (ours chooses it) and to 336x336 for the global view, and
  the grid is cut into tiles with a view (`unflatten` / `permute`), as ours does.

Runs alternate (ours, transformers', ...) after a warm-up and each figure is the median over `--repeats` passes
over the images; printed: images/s for both, ours_time / theirs_time (lower is better), and the largest
difference between the two outputs (normalised units; transformers resizes the 8-bit image and rounds it to 8 bits,
ours resizes in float32, so they differ by about one grey level, 1/255 / std ~ 0.015).

Run from the repository root:

    python benches/preprocessing.py [--images 16] [--repeats 5] [--threads 2] [--smoke]
"""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor
from transformers.image_utils import PILImageResampling

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_llava import time_interleaved  # noqa: E402  (alternating runs, medians)

from visionllm_hf.processing.image_processing_visionllm import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VisionLLMImageProcessor,
    select_tile_grid,
)

TILE = 336
SIZES = [(640, 480), (1024, 768), (500, 1000), (336, 336), (1280, 960), (800, 600), (720, 1280), (900, 400)]


def make_images(count: int, seed: int = 0) -> list[Image.Image]:
    """Photo-like RGB images: smooth random colour fields with some noise, sizes cycling through `SIZES`."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height))
        noise = rng.integers(-12, 13, (height, width, 3))
        images.append(Image.fromarray(np.clip(np.asarray(coarse) + noise, 0, 255).astype(np.uint8)))
    return images


def transformers_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(
        size={"height": TILE, "width": TILE},
        do_center_crop=False,
        resample=PILImageResampling.BICUBIC,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )


def theirs_tiled(processor: CLIPImageProcessor, images: list[Image.Image], grids: list[list[int]]) -> torch.Tensor:
    """v2 tiling through transformers' processor: the grid resize cut into tiles, then the global view."""
    all_tiles = []
    for image in images:
        columns, rows = select_tile_grid(image.width, image.height, grids, TILE)
        size = {"height": rows * TILE, "width": columns * TILE}
        resized = processor(image, size=size, return_tensors="pt")["pixel_values"][0]
        tiles = resized.unflatten(1, (rows, TILE)).unflatten(3, (columns, TILE))
        all_tiles.append(tiles.permute(1, 3, 0, 2, 4).reshape(rows * columns, 3, TILE, TILE))
        all_tiles.append(processor(image, return_tensors="pt")["pixel_values"])
    return torch.cat(all_tiles)


def cases(images: list[Image.Image]) -> dict[str, dict[str, Callable[[], torch.Tensor]]]:
    theirs = transformers_processor()
    one_tile = VisionLLMImageProcessor(tile_size=TILE, max_tiles=1, use_global_view=False)
    tiled = VisionLLMImageProcessor(tile_size=TILE, max_tiles=4, use_global_view=True)
    return {
        "1 tile": {
            "ours": lambda: one_tile(images)["pixel_values"],
            "transformers": lambda: theirs(images, return_tensors="pt")["pixel_values"],
        },
        "v2 tiling": {
            "ours": lambda: tiled(images)["pixel_values"],
            "transformers": lambda: theirs_tiled(theirs, images, tiled.grids),
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--smoke", action="store_true", help="fewest images, one repeat: checks the bench runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.repeats = 2, 1
    torch.set_num_threads(args.threads)
    images = make_images(args.images)
    print(f"{args.images} PIL images, {TILE} px tiles, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'case':<11}{'ours img/s':>12}{'transformers img/s':>20}{'ours/theirs time':>18}{'max |diff|':>12}")
    for name, runs in cases(images).items():
        ours, theirs = runs["ours"](), runs["transformers"]()
        assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
        difference = (ours - theirs).abs().max().item()
        times = time_interleaved(runs, args.repeats, torch.device("cpu"))
        rates = {key: len(images) / value for key, value in times.items()}
        ratio = times["ours"] / times["transformers"]
        print(f"{name:<11}{rates['ours']:>12.1f}{rates['transformers']:>20.1f}{ratio:>18.3f}{difference:>12.4f}")


if __name__ == "__main__":
    main()
