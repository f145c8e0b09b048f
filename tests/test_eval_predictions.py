"""`visionllm-hf eval --predictions`: scoring what `predict` wrote gives the AP `eval` gets running the model."""

import json

import pytest
import torch

from visionllm_hf.cli import main
from visionllm_hf.demo import DEMO_MODEL
from visionllm_hf.synthetic import write_dataset


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Held-out scenes (another seed than the demo model's training data)."""
    return write_dataset(tmp_path_factory.mktemp("eval_predictions"), num_images=12, seed=4321)


def test_predictions_file_scores_as_running_the_model(data, tmp_path):
    spec = f"coco={data['instances']},images={data['images']},task=detection"
    assert main(["eval", "--model", str(DEMO_MODEL), "--data", spec, "--out", str(tmp_path / "model.json")]) == 0
    assert main(["predict", "--model", str(DEMO_MODEL), "--inputs", str(data["instances"]), "--images",
                 str(data["images"]), "--task", "detection", "--out", str(tmp_path / "predicted"),
                 "--threshold", "0", "--nms-threshold", "1"]) == 0
    assert main(["eval", "--predictions", str(tmp_path / "predicted"), "--data", spec,
                 "--out", str(tmp_path / "file.json")]) == 0
    by_model = json.loads((tmp_path / "model.json").read_text())
    from_file = json.loads((tmp_path / "file.json").read_text())
    # a model that finds shapes (the shipped demo: 0.275 here), so equal scores mean something
    assert by_model["detection AP50"] > 0.2
    for metric in ("detection AP", "detection AP50", "detection AP50 class-agnostic"):
        assert from_file[metric] == pytest.approx(by_model[metric], abs=0.005), metric


def test_predictions_of_other_images_are_not_scored_as_zero(data, tmp_path):
    (tmp_path / "coco_results.json").write_text(json.dumps(
        [{"image_id": 999, "category_id": 1, "score": 0.9, "bbox": [0, 0, 10, 10]}]))
    spec = f"coco={data['instances']},images={data['images']},task=detection"
    assert main(["eval", "--predictions", str(tmp_path), "--data", spec, "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == {}


@pytest.mark.parametrize(("content", "message"), [
    ("{}", "a JSON list"),
    ('[{"image_id": 1, "score": 1}]', "has no category_id, bbox"),
    ("not json", "not JSON"),
])
def test_bad_predictions_files_are_named(data, tmp_path, content, message):
    (tmp_path / "coco_results.json").write_text(content)
    spec = f"coco={data['instances']},images={data['images']}"
    with pytest.raises(ValueError, match=message):
        main(["eval", "--predictions", str(tmp_path), "--data", spec, "--out", str(tmp_path / "m.json")])


def test_eval_needs_a_model_or_predictions(data):
    with pytest.raises(SystemExit, match="--model .* or --predictions"):
        main(["eval", "--data", str(data["root"])])
