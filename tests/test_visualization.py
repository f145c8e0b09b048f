import numpy as np
import pytest
from PIL import Image

from visionllm_hf.visualization import (
    PROMPT_COLOUR,
    color_for,
    draw_objects,
    draw_visual_prompts,
)


def test_boxes_masks_and_keypoints_land_where_they_should():
    image = Image.new("RGB", (100, 80), "black")
    mask = np.zeros((80, 100), dtype=bool)
    mask[50:70, 60:90] = True
    objects = [
        {"label": "cat", "score": 0.9, "box": [10, 20, 40, 60], "mask": None, "keypoints": None},
        {"label": "dog", "score": 0.8, "box": None, "mask": mask, "keypoints": [[80, 10, 0.9], [5, 5, 0.1]]},
    ]
    drawn = np.asarray(draw_objects(image, objects)).astype(int)
    cat, dog = color_for(0), color_for(1)
    assert tuple(drawn[40, 10]) == cat and tuple(drawn[20, 25]) == cat  # box edges
    assert tuple(drawn[40, 25]) == (0, 0, 0)  # inside the outline stays untouched
    blended = np.round(0.45 * np.array(dog)).astype(int)
    assert tuple(drawn[60, 75]) == tuple(blended)  # mask pixel blended towards the label colour
    assert tuple(drawn[10, 5]) == (0, 0, 0)  # outside the mask
    assert tuple(drawn[10, 80]) == dog and tuple(drawn[5, 5]) == (0, 0, 0)  # only visible keypoints
    assert np.asarray(image).sum() == 0  # the input is not modified


def test_same_label_same_colour_and_bad_mask_size():
    image = Image.new("RGB", (30, 30))
    objects = [{"label": "a", "box": [1, 1, 10, 10]}, {"label": "a", "box": [15, 15, 25, 25]}]
    drawn = np.asarray(draw_objects(image, objects))
    assert tuple(drawn[1, 5]) == tuple(drawn[15, 20]) == color_for(0)
    with pytest.raises(ValueError, match="does not fit"):
        draw_objects(image, [{"label": "a", "mask": np.ones((5, 5), dtype=bool)}])


def test_visual_prompts_are_drawn_where_the_user_put_them():
    image = Image.new("RGB", (60, 40), "black")
    mask = np.zeros((40, 60), dtype=bool)
    mask[30:36, 40:50] = True
    regions = [{"box": [2, 2, 20, 12]}, {"point": [30, 20]}, {"scribble": [[5, 30], [15, 30]]}, mask]
    drawn = np.asarray(draw_visual_prompts(image, regions))
    white = PROMPT_COLOUR
    assert tuple(drawn[2, 10]) == white and tuple(drawn[7, 10]) == (0, 0, 0)  # box edge, not its inside
    assert tuple(drawn[20, 33]) == white and tuple(drawn[17, 30]) == white  # both arms of the cross
    assert tuple(drawn[27, 30]) == (0, 0, 0)  # the cross is small
    assert tuple(drawn[30, 10]) == white  # scribble
    assert tuple(drawn[30, 45]) == white and tuple(drawn[33, 45]) == (0, 0, 0)  # mask border, not its inside
    assert np.asarray(image).sum() == 0


def test_visual_prompts_reject_what_they_cannot_draw():
    image = Image.new("RGB", (20, 20))
    with pytest.raises(ValueError, match="exactly one of"):
        draw_visual_prompts(image, [{"circle": [1, 2, 3]}])
    with pytest.raises(ValueError, match="does not fit"):
        draw_visual_prompts(image, [np.ones((5, 5), dtype=bool)])
