import json

import numpy as np
from pycocotools.coco import COCO

from visionllm_hf.synthetic import KEYPOINTS, make_scene, write_dataset


def test_scenes_are_deterministic_per_seed():
    first, again, other = make_scene(3, 7), make_scene(3, 7), make_scene(4, 7)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert [s.name for s in first.shapes] == [s.name for s in again.shapes]
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


def test_masks_are_the_visible_pixels_and_boxes_enclose_them():
    for index in range(20):
        scene = make_scene(0, index)
        owner = np.zeros(scene.image.size[::-1], dtype=int)
        for shape in scene.shapes:
            assert shape.mask.any()
            owner += shape.mask
            x1, y1, x2, y2 = shape.box()
            rows, columns = np.nonzero(shape.mask)
            assert (x1, y1, x2, y2) == (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1)
        assert owner.max() <= 1  # no pixel belongs to two shapes
        pixels = np.asarray(scene.image).astype(int)
        for shape in scene.shapes:  # the drawn colour is where the mask says
            from visionllm_hf.synthetic.scenes import COLOURS

            assert np.abs(pixels[shape.mask].mean(0) - COLOURS[shape.colour]).max() < 8


def test_referring_expressions_pick_out_their_shape():
    for index in range(30):
        scene = make_scene(1, index)
        for shape in scene.shapes:
            expression = scene.describe(shape)
            words = expression.removeprefix("the ").split(" left of ")[0].split(" right of ")[0].split()
            matches = [s for s in scene.shapes if all(w in (s.kind, s.colour, s.size) for w in words)]
            assert shape in matches
            if " of " not in expression:
                assert matches == [shape]


def test_written_dataset_loads_in_pycocotools_and_is_reproducible(tmp_path):
    paths = write_dataset(tmp_path / "a", num_images=6, seed=2)
    again = write_dataset(tmp_path / "b", num_images=6, seed=2)
    coco = COCO(str(paths["instances"]))
    assert len(coco.getImgIds()) == 6 and coco.getAnnIds()
    annotation = coco.loadAnns(coco.getAnnIds())[0]
    assert coco.annToMask(annotation).sum() == annotation["area"]
    assert len(annotation["keypoints"]) == 3 * len(KEYPOINTS)
    assert coco.loadCats(annotation["category_id"])[0]["keypoints"] == list(KEYPOINTS)
    for name in ("instances", "captions", "conversations", "referring", "generation"):
        assert paths[name].read_text() == again[name].read_text()
    assert (paths["images"] / "00000.png").read_bytes() == (again["images"] / "00000.png").read_bytes()
    counting = [c for c in json.loads(paths["conversations"].read_text()) if c["task"] == "counting"]
    assert all(c["conversations"][1]["value"].isdigit() for c in counting)
