"""Data as users bring it goes through validate-data, train, eval and predict with no hand edits.

The fixture is written by `visionllm_hf.synthetic.foreign.write_foreign_dataset`: categories the checkpoint never
saw (arrow with 3 keypoints, hexagon with 7, cross with none), flat and nested polygons and RLE, a referring
file named `expressions.jsonl` with polygon and mask-file masks, counting questions without task tags.
"""

import json
import random

import pytest
import torch

from visionllm_hf.cli import main
from visionllm_hf.synthetic.foreign import write_foreign_dataset
from visionllm_hf.synthetic.scenes import FOREIGN_KEYPOINTS
from visionllm_hf.trainer.data import CocoSource


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    return write_foreign_dataset(tmp_path_factory.mktemp("foreign"), num_images=6, seed=0)


@pytest.fixture(scope="module")
def specs(foreign):
    images = foreign["images"]
    coco, refs, chat = foreign["instances"], foreign["referring"], foreign["conversations"]
    return [
        f"coco={coco},images={images},task=instance_segmentation",
        f"coco={coco},images={images},task=pose",
        f"referring={refs},images={images},task=res",
        f"referring={refs},images={images},task=grounding",
        f"conversation={chat},images={images}",
    ]


def test_validate_data_reads_every_form_and_finds_nothing_wrong(foreign, specs, capsys):
    assert main(["validate-data", "--data", *specs]) == 0
    report = capsys.readouterr().out
    assert "keypoints of arrow: tip, tail_left, tail_right" in report
    assert "polygon" in report and "polygons" in report and "rle" in report and "file" in report
    assert "recognised by question and answer" in report and "no problem found" in report
    broken = json.loads(foreign["instances"].read_text())
    broken["annotations"][0]["category_id"] = 99
    bad = foreign["root"] / "broken.json"
    bad.write_text(json.dumps(broken))
    assert main(["validate-data", "--data", f"coco={bad},images={foreign['images']}"]) == 1
    assert "category_id" in capsys.readouterr().out


def test_pose_targets_follow_the_keypoint_names(foreign):
    """Each category's keypoints land in the model's slot of the same name; the model's other names are unlabelled."""
    source = CocoSource(str(foreign["instances"]), str(foreign["images"]), task="pose")
    model_names = ["nose", "tip", "left_eye"]
    names = model_names + [n for n in source.keypoint_names_in_data(model_names) if n not in model_names]
    assert names == ["nose", "tip", "left_eye", "tail_left", "tail_right", *FOREIGN_KEYPOINTS["hexagon"]]
    source.use_keypoint_names(names)
    data = json.loads(foreign["instances"].read_text())
    by_name = {c["name"]: c for c in data["categories"]}
    seen = set()
    for index, seed in ((index, seed) for index in range(len(source)) for seed in range(4)):
        sample = source.sample(index, random.Random(seed))  # the seed picks one of the image's pose categories
        target = sample["targets"][0]
        category = by_name[target["category"]]
        file_name = sample["images"][0].rsplit("/", 1)[-1]
        image = next(i for i in data["images"] if i["file_name"] == file_name)
        raw = [a for a in data["annotations"] if a["image_id"] == image["id"] and a["category_id"] == category["id"]]
        for laid_out, annotation in zip(target["keypoints"], raw):
            for slot, name in enumerate(category["keypoints"]):
                x, y, visibility = annotation["keypoints"][3 * slot: 3 * slot + 3]
                expected = torch.tensor([x / image["width"], y / image["height"], visibility])
                torch.testing.assert_close(laid_out[names.index(name)], expected)
            others = [i for i, name in enumerate(names) if name not in category["keypoints"]]
            assert (laid_out[others] == 0).all()
        seen.add(target["category"])
    assert seen == {"arrow", "hexagon"}


def test_train_continues_the_checkpoint_grows_keypoints_and_eval_scores_the_foreign_data(foreign, specs, tmp_path, capsys):
    base, run = tmp_path / "base", tmp_path / "run"
    assert main(["build", "--preset", "tiny", "--out", str(base)]) == 0
    argv = ["train", "--model", str(base), "--output_dir", str(run), "--max_steps", "2",
            "--per_device_train_batch_size", "2", "--use_cpu", "--save_strategy", "no", "--learning_rate_scale", "0.5",
            "--data", *specs]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "--stage from-scratch: the checkpoint's history is random-init" in printed
    config = json.loads((run / "config.json").read_text())
    assert config["training_history"] == ["random-init", "from-scratch"]
    added = [name for names in FOREIGN_KEYPOINTS.values() for name in names]
    assert config["keypoint_names"][-len(added):] == added and len(config["keypoint_names"]) == 17 + len(added)
    card = (run / "README.md").read_text()
    assert "'vision_tower': 0.0005" in card  # the rates trained with: the preset's 1e-3 times 0.5

    out = tmp_path / "metrics.json"
    eval_specs = [specs[1].replace(",task=pose", ""), specs[2].replace(",task=res", ""), specs[4]]
    assert main(["eval", "--model", str(run), "--data", *eval_specs, "--max-images", "2", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    for name in ("detection AP50", "mask AP50", "keypoint AP", "REC P@0.5", "RES cIoU", "counting exact match"):
        assert name in metrics and 0.0 <= metrics[name] <= 1.0
    printed = capsys.readouterr().out
    assert "'cross': no keypoints" in printed  # said, not scored as 0
