import math

import numpy as np
import pytest
import torch
from PIL import Image

from visionllm_hf.processing import VisionLLMImageProcessor, load_image
from visionllm_hf.processing.image_processing_visionllm import default_tile_grids, select_tile_grid

from .helpers import random_image

TILE = 32


@pytest.fixture
def image_processor():
    return VisionLLMImageProcessor(tile_size=TILE, max_tiles=4, image_seq_length=16)


def test_default_aspect_ratio_set_holds_every_grid_within_the_budget():
    grids = default_tile_grids(1, 4)
    assert sorted(map(tuple, grids)) == sorted([(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (4, 1), (2, 2)])


@pytest.mark.parametrize(
    "height, width, grid",
    [(1000, 1000, (2, 2)), (250, 1000, (4, 1)), (1000, 250, (1, 4)), (20, 20, (1, 1)), (300, 600, (2, 1))],
)
def test_tile_and_token_counts_follow_the_grid(image_processor, height, width, grid):
    out = image_processor(random_image(height, width))
    columns, rows = grid
    expected_tiles = columns * rows + 1  # local tiles plus the global view
    assert out["image_grids"].tolist() == [[columns, rows]]
    assert out["pixel_values"].shape == (expected_tiles, 3, TILE, TILE)
    assert image_processor.num_image_tokens(grid) == expected_tiles * 16


def test_global_view_off_and_budget_respected():
    processor = VisionLLMImageProcessor(tile_size=TILE, max_tiles=2, use_global_view=False, image_seq_length=16)
    out = processor(random_image(1000, 1000))
    assert out["pixel_values"].shape[0] == out["image_grids"].prod().item() <= 2


def test_closest_aspect_ratio_is_chosen_in_log_space():
    grids = default_tile_grids(1, 6)
    for columns, rows in grids:
        # an image exactly the size of a grid gets that grid, also when a larger grid has the same ratio
        assert select_tile_grid(columns * TILE, rows * TILE, grids, tile_size=TILE) == (columns, rows)
    # 3:1 is closer to 3x1 than to 2x1 or 4x1
    assert select_tile_grid(900, 300, grids, tile_size=TILE) == (3, 1)
    # equally close grids: a small image stays on one tile, a large one gets the larger grid
    assert select_tile_grid(20, 20, [[1, 1], [2, 2]], tile_size=TILE) == (1, 1)
    assert select_tile_grid(400, 400, [[1, 1], [2, 2]], tile_size=TILE) == (2, 2)


def test_tiles_are_the_resized_image_cut_row_by_row(image_processor):
    image = random_image(64, 128)  # exactly a 2x1 grid at twice the tile size
    out = image_processor(image)
    assert out["image_grids"].tolist() == [[2, 1]]
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    restored = out["pixel_values"] * std + mean
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, size=(32, 64), mode="bicubic", antialias=True
    )[0].clamp(0, 1)
    torch.testing.assert_close(restored[0], resized[:, :, :32], atol=1e-5, rtol=0)
    torch.testing.assert_close(restored[1], resized[:, :, 32:], atol=1e-5, rtol=0)


def test_pil_numpy_and_torch_inputs_agree(image_processor):
    array = random_image(40, 70)
    as_pil = image_processor(Image.fromarray(array))["pixel_values"]
    as_numpy = image_processor(array)["pixel_values"]
    as_torch = image_processor(torch.from_numpy(array).permute(2, 0, 1))["pixel_values"]
    as_float = image_processor(torch.from_numpy(array).permute(2, 0, 1).float() / 255)["pixel_values"]
    torch.testing.assert_close(as_pil, as_numpy)
    torch.testing.assert_close(as_pil, as_torch)
    torch.testing.assert_close(as_pil, as_float)


@pytest.mark.parametrize("size", [(1, 1), (1, 4096), (4096, 1), (4096, 4096)])
def test_any_size_from_one_pixel_to_4096(image_processor, size):
    image = np.zeros((*size, 3), dtype=np.uint8)
    out = image_processor(image)
    assert torch.isfinite(out["pixel_values"]).all()
    assert out["pixel_values"].shape[1:] == (3, TILE, TILE)


def test_grayscale_and_rgba_become_rgb():
    assert load_image(np.zeros((5, 6), dtype=np.uint8)).shape == (3, 5, 6)
    assert load_image(Image.new("RGBA", (6, 5))).shape == (3, 5, 6)
    assert load_image(Image.new("L", (6, 5))).shape == (3, 5, 6)


def test_corrupt_file_raises_value_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(path)
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "missing.jpg")


def test_zero_pixel_images_raise(image_processor):
    with pytest.raises(ValueError, match="zero pixels"):
        image_processor(np.zeros((0, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="zero pixels"):
        image_processor(torch.zeros(3, 10, 0))


@pytest.mark.parametrize("bad", [42, {"image": 1}, object(), b"bytes"])
def test_non_image_objects_raise_type_error(image_processor, bad):
    with pytest.raises(TypeError, match="an image must be"):
        image_processor(bad)


def test_wrong_channel_count_raises():
    with pytest.raises(ValueError, match="channels"):
        load_image(np.zeros((4, 4, 5), dtype=np.uint8))


def test_save_and_reload_keeps_settings(image_processor, tmp_path):
    image_processor.save_pretrained(tmp_path)
    reloaded = VisionLLMImageProcessor.from_pretrained(tmp_path)
    image = random_image(50, 120)
    assert reloaded.tile_size == TILE and reloaded.image_seq_length == 16
    torch.testing.assert_close(reloaded(image)["pixel_values"], image_processor(image)["pixel_values"])
    assert math.isclose(reloaded.image_mean[0], image_processor.image_mean[0])
