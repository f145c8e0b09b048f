"""`visionllm-hf predict` and `visionllm_hf.prediction`: every input kind, every output file, errors per image,
`--resume` after a killed run, and two processes writing what one writes. The tiny checkpoint has random
weights, so runs are compared for structure and equality, not quality."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from transformers import AutoModel, AutoProcessor

from visionllm_hf.cli import main
from visionllm_hf.prediction import (
    PredictionInput,
    category_ids,
    predict,
    read_inputs,
    resolve_dtype,
    task_name,
)
from visionllm_hf.prediction.outputs import read_lines
from visionllm_hf.synthetic import KINDS, write_dataset

FAST = ["--max-new-tokens", "6", "--threshold", "0"]  # short answers; every candidate kept, so objects exist


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: two threads on two busy cores slow generation a hundredfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Six synthetic scenes: `images/`, `instances.json` (COCO), `referring.jsonl`, ..."""
    return write_dataset(tmp_path_factory.mktemp("predict_data"), num_images=6, seed=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict_checkpoint")
    assert main(["build", "--preset", "tiny", "--seed", "0", "--out", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def loaded(checkpoint):
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)


def predict_cli(checkpoint, inputs, task, out, *extra) -> int:
    return main(["predict", "--model", str(checkpoint), "--inputs", str(inputs), "--task", task, "--out", str(out),
                 *FAST, *map(str, extra)])


def predict_subprocess(checkpoint, inputs, task, out, *extra, launcher=()) -> subprocess.Popen:
    """The command line in its own process (one torch thread, as torchrun gives each rank)."""
    command = [sys.executable, *launcher, "-m", "visionllm_hf.cli", "predict", "--model", str(checkpoint),
               "--inputs", str(inputs), "--task", task, "--out", str(out), *FAST, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> int:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode in (0, 1), stderr[-3000:]
    return process.returncode


def write_json_lines(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# --- inputs ----------------------------------------------------------------------------------------------


def test_read_inputs_from_a_folder_a_glob_and_coco(data, tmp_path):
    (data["images"] / "notes.txt").write_text("not an image")
    folder = read_inputs(data["images"])
    assert [r.id for r in folder.records] == [f"{i:05d}.png" for i in range(6)]
    assert [r.image_id for r in folder.records] == [1, 2, 3, 4, 5, 6]
    pattern = read_inputs(str(data["images"] / "0000[1-3].png"))
    assert [Path(r.image).name for r in pattern.records] == ["00001.png", "00002.png", "00003.png"]
    coco = read_inputs(data["instances"])  # images/ next to the JSON by default
    assert coco.folder == data["images"] and coco.category_names == list(KINDS)
    assert [r.image_id for r in coco.records] == [1, 2, 3, 4, 5, 6]
    assert Path(coco.records[0].image).is_file()
    elsewhere = read_inputs(data["instances"], images=tmp_path)
    assert Path(elsewhere.records[0].image).parent == tmp_path
    with pytest.raises(ValueError, match="no image files"):
        read_inputs(tmp_path)


def test_read_inputs_from_json_lines_keeps_each_records_values(data, tmp_path):
    records = [
        {"image": "images/00000.png", "prompt": "How many?", "categories": ["circle"]},
        {"image": "images/00001.png", "regions": [{"box": [1, 1, 20, 20]}], "expression": "the red square", "id": 7},
        "{not json",
        {"prompt": "no image"},
    ]
    inputs = read_inputs(write_json_lines(data["root"] / "records.jsonl", records))
    first, second, broken, imageless = inputs.records
    assert (first.prompt, first.categories, first.id) == ("How many?", ["circle"], "images/00000.png")
    assert (second.regions, second.expression, second.id) == ([{"box": [1, 1, 20, 20]}], "the red square", 7)
    assert Path(first.image) == data["root"] / "images" / "00000.png"
    assert broken.error.startswith("line 3") and "no 'image'" in imageless.error


def test_read_inputs_from_a_saved_dataset(data, tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.open(data["images"] / f"{i:05d}.png") for i in range(3)]
    table = {"picture": [*images, None], "prompt": ["a?", "b?", "c?", "d?"]}
    features = datasets.Features({"picture": datasets.Image(), "prompt": datasets.Value("string")})
    datasets.Dataset.from_dict(table, features=features).save_to_disk(tmp_path / "saved")
    inputs = read_inputs(tmp_path / "saved", image_column="picture")
    assert [r.prompt for r in inputs.records] == ["a?", "b?", "c?", "d?"]
    assert inputs.records[1].image().size == (128, 128)
    with pytest.raises(ValueError, match="no image in column 'picture'"):
        inputs.records[3].image()
    with pytest.raises(ValueError, match="has no column 'image'"):
        read_inputs(tmp_path / "saved")


def test_task_names_take_dashes_and_dtype_auto_is_float32_on_the_cpu():
    assert task_name("instance-segmentation") == "instance_segmentation"
    with pytest.raises(ValueError, match="unknown task"):
        task_name("segment-everything")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert category_ids(["dog", "cat"]) == {"dog": 1, "cat": 2}
    assert category_ids(["cat", "bird"], [{"id": 5, "name": "cat"}]) == {"cat": 5, "bird": 6}


# --- the Python API ---------------------------------------------------------------------------------------


def test_predict_gives_transformers_detection_schema(loaded, data):
    model, processor = loaded
    paths = [str(data["images"] / f"{i:05d}.png") for i in range(3)]
    results = list(predict(model, processor, paths, task="detection", categories=["circle", "square"],
                           batch_size=2, max_new_tokens=6, threshold=0.0))
    assert [r["index"] for r in results] == [0, 1, 2] and [r["id"] for r in results] == paths
    for result in results:
        count = len(result["text_labels"])
        assert count > 0 and result["boxes"].shape == (count, 4) and result["scores"].shape == (count,)
        assert result["labels"].dtype == torch.int64 and result["id2label"] == {0: "circle", 1: "square"}
        assert [result["id2label"][int(i)] for i in result["labels"]] == result["text_labels"]
        assert result["boxes"].min() >= 0 and result["boxes"].max() <= 128
        assert all(obj["mask"].shape == (128, 128) for obj in result["objects"])
    supervision = pytest.importorskip("supervision")
    detections = supervision.Detections.from_transformers(results[0], id2label=results[0]["id2label"])
    assert len(detections) == len(results[0]["text_labels"])
    assert list(detections.data["class_name"]) == results[0]["text_labels"]
    np.testing.assert_allclose(detections.xyxy, results[0]["boxes"].numpy())


def test_predict_with_a_model_without_decoders_gives_text(tiny_plain, data):
    model, processor = tiny_plain
    images = [Image.open(data["images"] / "00000.png"), np.asarray(Image.open(data["images"] / "00001.png"))]
    results = list(predict(model, processor, images, task="vqa", prompt="How many shapes?", max_new_tokens=4))
    assert [r["id"] for r in results] == [0, 1] and all(isinstance(r["text"], str) for r in results)
    assert all(r["objects"] == [] and r["boxes"].shape == (0, 4) for r in results)


def test_a_records_own_values_override_the_shared_ones(loaded, data):
    model, processor = loaded
    records = [PredictionInput(0, "a", str(data["images"] / "00000.png"), 1),
               PredictionInput(1, "b", str(data["images"] / "00001.png"), 2, categories=["diamond"])]
    results = list(predict(model, processor, records, task="pose", categories=["circle", "square"],
                           max_new_tokens=6, threshold=0.0))
    assert set(results[0]["text_labels"]) <= {"circle", "square"} and set(results[1]["text_labels"]) == {"diamond"}
    assert all(len(obj["keypoints"]) == len(model.config.keypoint_names) for obj in results[1]["objects"])


# --- the command line and its files -----------------------------------------------------------------------


@pytest.mark.parametrize("task", ["detection", "instance-segmentation", "pose"])
def test_coco_input_gives_predictions_and_coco_results_that_load(checkpoint, data, tmp_path, task):
    out = tmp_path / "out"
    assert predict_cli(checkpoint, data["instances"], task, out, "--batch-size", "4", "--save-images") == 0
    lines = read_lines(out / "predictions.jsonl")
    ground_truth = COCO(str(data["instances"]))
    assert [line["image_id"] for line in lines] == ground_truth.getImgIds()
    assert [line["id"] for line in lines] == [f"{i:05d}.png" for i in range(6)]
    for line in lines:
        assert line["task"] == task_name(task) and line["size"] == [128, 128]
        assert len(line["scores"]) == len(line["labels"]) == len(line["text_labels"]) == len(line["boxes"]) > 0
        for obj in line["objects"]:
            assert isinstance(obj["mask"]["counts"], str)
            assert coco_mask.decode({**obj["mask"], "counts": obj["mask"]["counts"].encode()}).shape == (128, 128)
    results = ground_truth.loadRes(str(out / "coco_results.json"))
    assert len(results.getAnnIds()) == sum(len(line["objects"]) for line in lines)
    first = results.loadAnns(results.getAnnIds())[0]
    assert first["category_id"] in ground_truth.getCatIds() and len(first["bbox"]) == 4
    if task == "pose":
        flat = first["keypoints"]
        assert len(flat) == 3 * 17 and set(flat[2::3]) <= {0, 2}
    assert (out / "errors.jsonl").read_text() == ""
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}_{i:05d}.png" for i in range(6)]


def test_folder_input_numbers_images_and_categories_in_order(checkpoint, data, tmp_path):
    out = tmp_path / "out"
    options = ("--categories", "square, circle", "--max-tiles", 1)
    assert predict_cli(checkpoint, data["images"], "detection", out, *options) == 0
    lines = read_lines(out / "predictions.jsonl")
    assert [line["image_id"] for line in lines] == [1, 2, 3, 4, 5, 6]
    results = json.loads((out / "coco_results.json").read_text())
    assert {r["category_id"] for r in results} == {1, 2}
    square = next(line for line in lines if "square" in line["text_labels"])
    assert square["labels"][square["text_labels"].index("square")] == 0  # index into the categories asked


def test_json_lines_input_with_prompts_and_visual_prompts(checkpoint, data, tmp_path):
    rle = coco_mask.encode(np.asfortranarray(np.pad(np.ones((20, 20), np.uint8), ((10, 98), (10, 98)))))
    records = [
        {"image": "images/00000.png", "regions": [{"point": [30, 30]}]},
        {"image": "images/00001.png", "regions": [{"box": [5, 5, 60, 60]}]},
        {"image": "images/00002.png", "regions": [{"mask": {"size": [128, 128], "counts": rle["counts"].decode()}}]},
    ]
    out = tmp_path / "out"
    jsonl = write_json_lines(data["root"] / "clicks.jsonl", records)
    assert predict_cli(checkpoint, jsonl, "interactive_segmentation", out, "--save-images") == 0
    lines = read_lines(out / "predictions.jsonl")
    assert [line["id"] for line in lines] == [r["image"] for r in records]
    assert all(obj["routing"] == "[SEG]" for line in lines for obj in line["objects"])
    assert not (out / "coco_results.json").exists()  # COCO results are for detection, segmentation and pose
    assert len(list((out / "images").iterdir())) == 3
    asked = write_json_lines(data["root"] / "questions.jsonl",
                             [{"image": "images/00000.png", "prompt": "How many?"}, {"image": "images/00001.png"}])
    assert predict_cli(checkpoint, asked, "vqa", tmp_path / "vqa", "--prompt", "What colour?") == 0
    assert len(read_lines(tmp_path / "vqa" / "predictions.jsonl")) == 2


def test_dataset_input(checkpoint, data, tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.open(data["images"] / f"{i:05d}.png") for i in range(3)]
    datasets.Dataset.from_dict({"image": images}).save_to_disk(tmp_path / "saved")
    assert predict_cli(checkpoint, tmp_path / "saved", "caption", tmp_path / "out") == 0
    assert [line["id"] for line in read_lines(tmp_path / "out" / "predictions.jsonl")] == [0, 1, 2]
    with pytest.raises(SystemExit, match="no column 'photo'"):
        predict_cli(checkpoint, tmp_path / "saved", "caption", tmp_path / "out", "--image-column", "photo")


def test_bad_inputs_are_reported_per_image_and_the_others_predicted(checkpoint, data, tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"not a png at all")
    records = [
        {"image": "images/00000.png", "regions": [{"box": [1, 1, 30, 30]}]},
        {"image": "images/missing.png", "regions": [{"box": [1, 1, 30, 30]}]},
        {"image": str(tmp_path / "corrupt.png"), "regions": [{"box": [1, 1, 30, 30]}]},
        {"image": "images/00001.png", "regions": [{"box": [100, 100, 400, 400]}]},  # outside the 128 px image
        "{broken",
        {"image": "images/00002.png", "regions": [{"box": [1, 1, 30, 30]}]},
    ]
    out = tmp_path / "out"
    jsonl = write_json_lines(tmp_path / "bad.jsonl", records)
    assert predict_cli(checkpoint, jsonl, "region_caption", out, "--batch-size", "6", "--images", data["root"]) == 1
    assert [line["index"] for line in read_lines(out / "predictions.jsonl")] == [0, 5]
    errors = read_lines(out / "errors.jsonl")
    assert [error["index"] for error in errors] == [1, 2, 3, 4]
    assert "not found" in errors[0]["error"] and "could not read" in errors[1]["error"]
    assert "outside" in errors[2]["error"] and "line 5" in errors[3]["error"]
    with pytest.raises(SystemExit):  # a mistake in the options as a whole stops before the model loads
        predict_cli(checkpoint, jsonl, "no-such-task", out)


def test_resume_after_a_killed_run_gives_the_files_of_an_uninterrupted_run(checkpoint, tmp_path):
    data = write_dataset(tmp_path / "data", num_images=16, seed=1)
    options = ("--batch-size", "2", "--categories", ",".join(KINDS))
    assert finished(predict_subprocess(checkpoint, data["images"], "instance_segmentation", tmp_path / "whole",
                                       *options)) == 0
    killed = predict_subprocess(checkpoint, data["images"], "instance_segmentation", tmp_path / "resumed", *options)
    predictions = tmp_path / "resumed" / "predictions.jsonl"
    deadline = time.monotonic() + 120
    while not (predictions.is_file() and predictions.read_text()) and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    written = len(read_lines(predictions))
    assert 0 < written < 16, written  # killed after its first batch, before its last
    assert finished(predict_subprocess(checkpoint, data["images"], "instance_segmentation", tmp_path / "resumed",
                                       *options, "--resume")) == 0
    for name in ("predictions.jsonl", "coco_results.json", "errors.jsonl"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def test_two_processes_write_what_one_process_writes(checkpoint, data, tmp_path):
    options = ("--batch-size", "3")  # one process: batches 0-2 and 3-5; two: the same batch on each
    one = predict_subprocess(checkpoint, data["instances"], "pose", tmp_path / "one", *options)
    assert finished(one) == 0
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    two = predict_subprocess(checkpoint, data["instances"], "pose", tmp_path / "two", *options, launcher=torchrun)
    assert finished(two) == 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "coco_results.json", "errors.jsonl", "predictions.jsonl"]  # the per-process files are merged away
    for name in ("predictions.jsonl", "coco_results.json"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
