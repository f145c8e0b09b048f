"""Bad training data fails when it is read, in the user's terms (file, record, field, fix), before any model loads."""

import json
import shutil
import warnings
from pathlib import Path

import pytest

from visionllm_hf.builder import build_tiny
from visionllm_hf.cli import main
from visionllm_hf.synthetic import write_dataset
from visionllm_hf.trainer import train as train_module
from visionllm_hf.trainer.data import CocoSource, ConversationSource, GenerationSource, ReferringSource
from visionllm_hf.trainer.data_checks import DataError, DataWarning, check_source

SOURCES = {"coco": CocoSource, "conversation": ConversationSource, "referring": ReferringSource,
           "generation": GenerationSource}
VALID = [  # (format, file, task): every source and task the synthetic files serve
    *[("coco", "instances.json", task) for task in ("detection", "instance_segmentation",
                                                    "interactive_segmentation", "pose")],
    ("coco", "captions.json", "caption"),
    ("conversation", "conversations.json", "conversation"),
    *[("referring", "referring.jsonl", task) for task in ReferringSource.tasks],
    ("generation", "generation.jsonl", "text_to_image"),
]


@pytest.fixture(scope="module")
def valid_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("valid") / "data"
    write_dataset(root, num_images=4, seed=0)
    return root


@pytest.fixture
def data(valid_data, tmp_path) -> Path:
    """A fresh copy of the valid synthetic dataset, to break."""
    return Path(shutil.copytree(valid_data, tmp_path / "data"))


def edit_json(change):
    def edit(path: Path):
        content = json.loads(path.read_text())
        change(content)
        path.write_text(json.dumps(content))
    return edit


def edit_lines(change):
    def edit(path: Path):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        change(records)
        path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    return edit


def annotation(index: int, **fields):
    return edit_json(lambda coco: coco["annotations"][index].update(fields))


def record(index: int, **fields):
    return edit_lines(lambda records: records[index].update(fields))


def drop(index: int, key: str, lines: bool = True):
    return (edit_lines if lines else edit_json)(lambda records: records[index].pop(key))


def drop_from_annotation(index: int, key: str):
    return edit_json(lambda coco: coco["annotations"][index].pop(key))


def every_annotation(**fields):
    return edit_json(lambda coco: [a.update(fields) for a in coco["annotations"]])


def overwrite(text: str):
    return lambda path: path.write_text(text)


def replace_line(number: int, text: str):
    def edit(path: Path):
        lines = path.read_text().splitlines()
        lines[number - 1] = text
        path.write_text("\n".join(lines) + "\n")
    return edit


def turn(index: int, number: int, **fields):
    return edit_json(lambda records: records[index]["conversations"][number].update(fields))


CASES = [  # id, format, file, task, edit, fragments the message must hold (besides the file name)
    ("coco-no-annotations", "coco", "instances.json", "detection",
     edit_json(lambda coco: coco.pop("annotations")), ["field 'annotations'", "is missing", "empty targets"]),
    ("coco-empty-annotations", "coco", "instances.json", "detection",
     edit_json(lambda coco: coco.update(annotations=[])), ["no usable sample for task 'detection'"]),
    ("coco-unknown-category", "coco", "instances.json", "detection", annotation(3, category_id=99),
     ["annotation 3 (id 4, image_id", "field 'category_id'", "99", "not in 'categories'", "add the category"]),
    ("coco-unknown-image-id", "coco", "instances.json", "detection", annotation(1, image_id=42),
     ["annotation 1 (id 2, image_id 42)", "field 'image_id'", "not an id in 'images'"]),
    ("coco-nan-bbox", "coco", "instances.json", "detection", annotation(0, bbox=[1, 2, float("nan"), 4]),
     ["annotation 0 (id 1", "field 'bbox'", "NaN", "not 4 finite numbers"]),
    ("coco-negative-bbox", "coco", "instances.json", "detection", annotation(2, bbox=[10, 10, -5, 8]),
     ["annotation 2 (id 3", "field 'bbox'", "negative width or height"]),
    ("coco-short-bbox", "coco", "instances.json", "detection", annotation(4, bbox=[10, 10, 5]),
     ["annotation 4 (id 5", "field 'bbox'", "[10, 10, 5]"]),
    ("coco-missing-image-file", "coco", "instances.json", "detection",
     lambda path: (path.parent / "images" / "00002.png").unlink(),
     ["image 2 (id 3)", "field 'file_name'", "00002.png", "not in the image folder"]),
    ("coco-no-categories", "coco", "instances.json", "detection", edit_json(lambda coco: coco.pop("categories")),
     ["field 'categories'", "task 'detection' asks for objects by category name"]),
    ("coco-captions-as-detection", "coco", "captions.json", "detection", lambda path: None,
     ["field 'categories'", "task=caption"]),
    ("coco-bad-polygon", "coco", "instances.json", "instance_segmentation", annotation(1, segmentation=[[1, 2, 3]]),
     ["annotation 1 (id 2", "field 'segmentation'", "polygon"]),
    ("coco-no-segmentation", "coco", "instances.json", "instance_segmentation", drop_from_annotation(2, "segmentation"),
     ["annotation", "field 'segmentation'", "neither polygons"]),
    ("coco-rle-size", "coco", "instances.json", "instance_segmentation",
     annotation(0, segmentation={"size": [64, 64], "counts": "abc"}), ["field 'segmentation'", "[128, 128]"]),
    ("coco-keypoints-length", "coco", "instances.json", "pose", annotation(0, keypoints=[1, 2, 2] * 4),
     ["annotation 0 (id 1", "field 'keypoints'", "12 numbers", "5 keypoints"]),
    ("coco-caption-missing", "coco", "captions.json", "caption", drop_from_annotation(1, "caption"),
     ["annotation 1 (id 2, image_id 2)", "field 'caption'"]),
    ("coco-invalid-json", "coco", "instances.json", "detection", overwrite('{"images": [1, 2,, 3]}'),
     ["line 1, column", "not valid JSON"]),
    ("coco-many-problems", "coco", "instances.json", "detection", every_annotation(category_id=99, bbox=None),
     ["20 problems", "... and 10 more"]),
    ("referring-rec-no-box", "referring", "referring.jsonl", "rec", drop(1, "box"),
     ["record 1 (line 2)", "field 'box'", "is missing, and task 'rec' needs it"]),
    ("referring-reversed-box", "referring", "referring.jsonl", "grounding", record(0, box=[50, 50, 10, 10]),
     ["record 0 (line 1)", "field 'box'", "reversed", "x2 > x1"]),
    ("referring-nan-box", "referring", "referring.jsonl", "rec", record(2, box=[1, 2, 3, float("inf")]),
     ["record 2 (line 3)", "field 'box'", "Infinity"]),
    ("referring-no-category", "referring", "referring.jsonl", "region_classification", drop(3, "category"),
     ["record 3 (line 4)", "field 'category'", "region_classification"]),
    ("referring-bad-mask", "referring", "referring.jsonl", "res", record(0, mask="nope"),
     ["record 0 (line 1)", "field 'mask'", "neither polygons"]),
    ("referring-no-expression", "referring", "referring.jsonl", "rec", drop(1, "expression"),
     ["record 1 (line 2)", "field 'expression'"]),
    ("referring-missing-image", "referring", "referring.jsonl", "rec", record(2, image="gone.png"),
     ["record 2 (line 3)", "field 'image'", "gone.png"]),
    ("referring-bad-line", "referring", "referring.jsonl", "rec", replace_line(3, '{"image": "00000.png",'),
     ["line 3", "not valid JSON"]),
    ("referring-one-json-document", "referring", "referring.jsonl", "rec",
     lambda path: path.write_text(json.dumps([json.loads(line) for line in path.read_text().splitlines()], indent=1)),
     ["one JSON document, not JSON lines"]),
    ("conversation-unknown-speaker", "conversation", "conversations.json", "conversation", turn(0, 1, **{"from": "bot"}),
     ["record 0", "field 'conversations[1].from'", '"bot"', "'gpt'", "1 problem in"]),
    ("conversation-image-count", "conversation", "conversations.json", "conversation",
     turn(2, 0, value="<image>\n<image>\nWhat is this?"), ["record 2", "2 '<image>' placeholders for 1 image"]),
    ("conversation-no-turns", "conversation", "conversations.json", "conversation", drop(1, "conversations", False),
     ["record 1", "field 'conversations'", "not a list of turns"]),
    ("conversation-not-a-list", "conversation", "conversations.json", "conversation",
     overwrite('{"data": []}'), ["not a list of records"]),
    ("conversation-no-answer", "conversation", "conversations.json", "conversation",
     edit_json(lambda records: records[0].update(conversations=records[0]["conversations"][:1])),
     ["record 0", "no answer turn"]),
    ("conversation-missing-image", "conversation", "conversations.json", "conversation",
     edit_json(lambda records: records[1].update(image=["00000.png", "absent.png"])),
     ["record 1", "field 'image[1]'", "absent.png"]),
    ("generation-no-prompt", "generation", "generation.jsonl", "text_to_image", drop(0, "prompt"),
     ["record 0 (line 1)", "field 'prompt'"]),
    ("generation-missing-image", "generation", "generation.jsonl", "text_to_image", record(1, image="nothing.png"),
     ["record 1 (line 2)", "field 'image'", "nothing.png"]),
    ("generation-edit-no-input", "generation", "generation.jsonl", "image_editing",
     edit_lines(lambda records: records[0].update(instruction="make it red")),
     ["record 0 (line 1)", "field 'input_image'"]),
]


def build(data: Path, kind: str, file: str, task: str):
    return SOURCES[kind](str(data / file), str(data / "images"), task=task)


@pytest.mark.parametrize(("kind", "file", "task", "edit", "fragments"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_source_raises_naming_file_record_field(data, kind, file, task, edit, fragments):
    edit(data / file)
    with pytest.raises(DataError) as caught:
        build(data, kind, file, task)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert str(data / file) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert caught.value.problems == check_source(kind, data / file, data / "images", task)  # the same, unraised


def test_check_source_lists_every_problem_without_raising(data):
    every_annotation(category_id=99)(data / "instances.json")
    problems = check_source("coco", data / "instances.json", data / "images", "detection")
    errors = [problem for problem in problems if problem.level == "error"]
    assert len(errors) == 10 and [problem.record.split(" (")[0] for problem in errors] == [
        f"annotation {index}" for index in range(10)]
    assert all(problem.field == "category_id" and str(data / "instances.json") in str(problem) for problem in errors)
    (warning,) = [problem for problem in problems if problem.level == "warning"]
    assert "circle, square, triangle, diamond occur in no annotation" in str(warning)


def test_risky_but_valid_data_warns(data):
    edit_json(lambda coco: coco.update(annotations=[a for a in coco["annotations"] if a["image_id"] != 2]))(
        data / "instances.json")
    with pytest.warns(DataWarning, match=r"1 of 4 images have no annotation \(ids 2\)"):
        source = CocoSource(str(data / "instances.json"), str(data / "images"))
    assert [p.level for p in source.problems] == ["warning"] * len(source.problems) and len(source) == 4


@pytest.mark.parametrize(("kind", "file", "task"), VALID, ids=[f"{kind}-{task}" for kind, _, task in VALID])
def test_valid_synthetic_data_has_no_problem(valid_data, kind, file, task):
    assert check_source(kind, valid_data / file, valid_data / "images", task) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        source = build(valid_data, kind, file, task)
    assert source.problems == [] and len(source) > 0


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if `visionllm-hf train` gets as far as loading the model."""
    def fail(options):
        raise AssertionError("the model was loaded before the bad input was reported")
    monkeypatch.setattr(train_module, "load_for_training", fail)


TINY_CONFIG = build_tiny(seed=0)[0].config


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    folder = tmp_path / "base"
    TINY_CONFIG.save_pretrained(folder)  # the config is read before any data; the model is never loaded here
    return folder


def train_argv(data: Path, checkpoint: Path, specs: tuple = (), stage: str = "v2-decoders", model: str | None = None):
    specs = specs or (f"coco={data / 'instances.json'},images={data / 'images'},task=detection",)
    return ["train", "--model", model or str(checkpoint), "--stage", stage, "--output_dir", str(data / "run"),
            "--max_steps", "1", "--use_cpu", "--data", *specs]


TRAIN_CASES = [  # id, file to edit, edit, train_argv keywords (from the data folder), fragments
    ("unknown-stage", None, None, lambda d: {"stage": "v9-everything"},
     ["unknown --stage 'v9-everything'", "v2-decoders"]),
    ("unknown-format", None, None, lambda d: {"specs": ("yolo=labels.txt",)}, ["must start with one of"]),
    ("missing-image-folder", None, None,
     lambda d: {"specs": (f"coco={d / 'instances.json'},images={d / 'pictures'}",)}, ["pictures does not exist"]),
    ("missing-data-file", None, None,
     lambda d: {"specs": (f"conversation={d / 'chats.json'},images={d / 'images'}",)}, ["chats.json", "does not exist"]),
    ("missing-model-folder", None, None, lambda d: {"model": str(d / "no-such-checkpoint")},
     ["--model", "no-such-checkpoint", "no such folder"]),
    ("unknown-option", None, None, lambda d: {"specs": (f"coco={d / 'instances.json'},imgs={d / 'images'}",)},
     ["takes no option 'imgs'"]),
    ("bad-ratio", None, None, lambda d: {"specs": (f"conversation={d / 'conversations.json'},ratio=lots",)},
     ["ratio=lots is not a number"]),
    ("v1-data-v2-stage", None, None,
     lambda d: {"specs": (f"v1detection={d / 'instances.json'},images={d / 'images'}",)},
     ["v1detection data trains VisionLLM v1 checkpoints"]),
    ("coco-no-annotations", "instances.json", edit_json(lambda coco: coco.pop("annotations")), lambda d: {},
     ["instances.json", "field 'annotations'", "is missing"]),
    ("coco-unknown-category", "instances.json", annotation(0, category_id=99), lambda d: {},
     ["instances.json", "annotation 0 (id 1", "field 'category_id'", "99"]),
    ("v1-coco-unknown-category", "instances.json", annotation(0, category_id=99),
     lambda d: {"stage": "v1-stage1", "specs": (f"v1detection={d / 'instances.json'},images={d / 'images'}",)},
     ["instances.json", "field 'category_id'", "99"]),
    ("second-spec-bad", "referring.jsonl", record(1, box=[5, 5, 1, 1]), lambda d: {"specs": (
        f"conversation={d / 'conversations.json'},images={d / 'images'}",
        f"referring={d / 'referring.jsonl'},images={d / 'images'},task=rec")},
     ["referring.jsonl", "record 1 (line 2)", "field 'box'"]),
]


@pytest.mark.parametrize(("file", "edit", "arguments", "fragments"), [case[1:] for case in TRAIN_CASES],
                         ids=[case[0] for case in TRAIN_CASES])
def test_bad_train_input_fails_before_the_model_loads(data, checkpoint, no_model_load, file, edit, arguments,
                                                      fragments):
    if edit is not None:
        edit(data / file)
    with pytest.raises(ValueError) as caught:
        main(train_argv(data, checkpoint, **arguments(data)))
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


class ReachedModelLoading(Exception):
    """Raised in place of the (slow) model load, once every check has passed."""


def test_hub_id_is_allowed_and_valid_data_reaches_model_loading(valid_data, checkpoint, monkeypatch):
    loaded = []

    def stop(options):
        loaded.append(options.model)
        raise ReachedModelLoading

    monkeypatch.setattr(train_module, "load_for_training", stop)
    specs = [f"coco={valid_data / 'instances.json'},images={valid_data / 'images'},task=pose,ratio=2",
             f"conversation={valid_data / 'conversations.json'},images={valid_data / 'images'}",
             f"referring={valid_data / 'referring.jsonl'},images={valid_data / 'images'},task=res",
             f"generation={valid_data / 'generation.jsonl'},images={valid_data / 'images'}"]
    for model in (str(checkpoint), "some-org/some-model"):
        with pytest.raises(ReachedModelLoading):
            main(train_argv(valid_data, checkpoint, specs, model=model))
    assert loaded == [str(checkpoint), "some-org/some-model"]
