"""Every mask form users bring decodes to the drawn shape, in training, in the data checks and in evaluation;
counting questions are recognised with and without tags."""

import json
import random

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from visionllm_hf.data_formats import decode_mask, is_counting_question, mask_form
from visionllm_hf.trainer.data import CocoSource, ReferringSource
from visionllm_hf.trainer.data_checks import DataError, check_coco, check_referring

HEIGHT, WIDTH = 16, 20
RECTANGLES = ((2, 3, 10, 12), (12, 1, 18, 6))  # x1, y1, x2, y2: two parts of one object


def drawn_mask() -> np.ndarray:
    """The two rectangles, drawn with numpy (pycocotools fills a polygon's pixels [x1, x2) x [y1, y2))."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    for x1, y1, x2, y2 in RECTANGLES:
        mask[y1:y2, x1:x2] = True
    return mask


def polygon(x1, y1, x2, y2) -> list[float]:
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE, written out here: run lengths over the column-major pixels, zeros first."""
    pixels = mask.flatten(order="F").astype(int)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], pixels, [1 - pixels[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


@pytest.fixture
def mask_forms(tmp_path) -> dict:
    """The same object in every form: nested polygons, one flat polygon (first part), RLE both ways, a PNG."""
    drawn = drawn_mask()
    compressed = coco_mask.encode(np.asfortranarray(drawn.astype(np.uint8)))
    Image.fromarray(drawn.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "image.png")
    return {
        "nested": [polygon(*r) for r in RECTANGLES],
        "rle_text": {"size": [HEIGHT, WIDTH], "counts": compressed["counts"].decode("ascii")},
        "rle_bytes": dict(compressed),
        "rle_uncompressed": {"size": [HEIGHT, WIDTH], "counts": uncompressed_counts(drawn)},
        "file": "mask.png",
    }


def test_every_mask_form_decodes_to_the_drawn_shape(mask_forms, tmp_path):
    drawn = drawn_mask()
    for name, segmentation in mask_forms.items():
        decoded = decode_mask(segmentation, HEIGHT, WIDTH, folder=tmp_path)
        assert decoded.dtype == bool and decoded.shape == (HEIGHT, WIDTH), name
        np.testing.assert_array_equal(decoded, drawn, err_msg=name)
    first = np.zeros_like(drawn)
    first[3:12, 2:10] = True
    np.testing.assert_array_equal(decode_mask(polygon(*RECTANGLES[0]), HEIGHT, WIDTH), first)  # flat polygon
    assert mask_form(polygon(*RECTANGLES[0])) == "polygon" and mask_form(mask_forms["nested"]) == "polygons"


def test_mask_sizes_that_do_not_fit_the_image_are_refused(mask_forms, tmp_path):
    with pytest.raises(ValueError, match="size"):
        decode_mask(mask_forms["rle_text"], HEIGHT + 1, WIDTH)
    with pytest.raises(ValueError, match="mask image"):
        decode_mask("mask.png", HEIGHT, WIDTH + 1, folder=tmp_path)


def coco_file(tmp_path, segmentations: list) -> str:
    data = {
        "images": [{"id": 1, "file_name": "image.png", "height": HEIGHT, "width": WIDTH}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [2, 1, 16, 11], "segmentation": s}
                        for i, s in enumerate(segmentations)],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_training_reads_every_mask_form(mask_forms, tmp_path):
    path = coco_file(tmp_path, [mask_forms[k] for k in ("nested", "rle_text", "rle_uncompressed", "file")])
    source = CocoSource(path, str(tmp_path), task="instance_segmentation")
    masks = source.sample(0, random.Random(0))["targets"][0]["masks"]
    assert masks.shape == (4, HEIGHT, WIDTH)
    for mask in masks:
        np.testing.assert_array_equal(mask.numpy().astype(bool), drawn_mask())
    flat = polygon(*RECTANGLES[0])
    source = CocoSource(coco_file(tmp_path, [flat]), str(tmp_path), task="instance_segmentation")
    assert source.sample(0, random.Random(0))["targets"][0]["masks"][0].sum() == 8 * 9  # no pycocotools TypeError


def referring_file(tmp_path, masks: list) -> list:
    return [(number + 1, {"image": "image.png", "expression": "the thing", "mask": mask})
            for number, mask in enumerate(masks)]


def test_the_checks_accept_every_form_and_name_what_is_wrong(mask_forms, tmp_path):
    forms = [mask_forms[k] for k in ("nested", "rle_text", "rle_uncompressed", "file")] + [polygon(*RECTANGLES[0])]
    assert check_coco(json.loads(open(coco_file(tmp_path, forms)).read()), "i.json", tmp_path,
                      "instance_segmentation") == []
    assert check_referring(referring_file(tmp_path, forms), "r.jsonl", tmp_path, "res") == []

    wrong_size = {"size": [HEIGHT, WIDTH + 1], "counts": mask_forms["rle_text"]["counts"]}
    bad = ["missing.png", wrong_size, {"size": [HEIGHT, WIDTH], "counts": [3, 4]}, [1.0, 2.0, 3.0]]
    problems = check_referring(referring_file(tmp_path, bad), "r.jsonl", tmp_path, "res")
    issues = [problem.issue for problem in problems]
    assert len(issues) == 4
    assert "missing.png" in issues[0] and "no such file" in issues[0]
    # the image's size comes from its header
    assert f"[{HEIGHT}, {WIDTH + 1}]" in issues[1] and f"[{HEIGHT}, {WIDTH}]" in issues[1]
    assert "add up to 7" in issues[2]
    assert "6 or more" in issues[3]
    problems = check_coco(json.loads(open(coco_file(tmp_path, ["missing.png"])).read()), "i.json", tmp_path,
                          "instance_segmentation")
    assert [p.field for p in problems] == ["segmentation"]
    path = tmp_path / "refs.jsonl"
    path.write_text(json.dumps({"image": "image.png", "expression": "x", "mask": "missing.png"}))
    with pytest.raises(DataError, match="missing.png"):  # training refuses it before any step
        ReferringSource(str(path), str(tmp_path), task="res")


@pytest.mark.parametrize(
    "question, answer, task, expected",
    [
        ("<image>\nHow many circles are there?", "3", None, True),
        ("How many squares are there? Answer with a number.", "Four.", None, True),
        ("how many shapes?", "twenty", None, True),
        ("How many shapes?", "12", "vqa", True),  # inferred whatever the tag
        ("How many shapes?", "a few", None, False),
        ("How many shapes?", "twenty-one", None, False),
        ("What colour is the circle?", "3", None, False),
        ("Count them.", "three", "counting", True),  # the tag says so
    ],
)
def test_counting_questions_are_tagged_or_inferred(question, answer, task, expected):
    record = {"image": "a.png", "conversations": [{"from": "human", "value": question},
                                                  {"from": "gpt", "value": answer}]}
    if task:
        record["task"] = task
    assert is_counting_question(record) is expected
