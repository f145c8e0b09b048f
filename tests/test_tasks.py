"""Tasks by name: `processor(images, task=..., categories=...)` asks as training asked, and perception gets its
answer's structure through `forced_answer_ids`, so a user gets scored boxes without knowing the forcing trick."""

import pytest
import torch

from visionllm_hf.processing.tasks import DETECTION_TEMPLATES, REC_TEMPLATES, TASKS, task_request

from .helpers import random_image

IMAGES = [random_image(48, 64, seed=1), random_image(40, 40, seed=2)]


def chat(processor, question: str, images: int = 1) -> str:
    content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def test_detection_task_asks_as_training_and_forces_the_category_list(tiny):
    model, processor = tiny
    categories = ["circle", "square", "red cup"]
    inputs = processor(images=IMAGES, task="detection", categories=categories)
    question = DETECTION_TEMPLATES[0].replace("<class>", ", ".join(categories))
    expected = processor(images=IMAGES, text=[chat(processor, question)] * 2)
    assert torch.equal(inputs["input_ids"], expected["input_ids"])
    answer = processor.answer_token_ids("circle [DET], square [DET], red cup [DET].")
    assert inputs["forced_answer_ids"].tolist() == [answer, answer]
    with torch.no_grad():
        out = model.generate(**inputs)
    results = processor.post_process_generation(out, threshold=0.0, nms_threshold=None)
    for row in results:
        assert row["text"].replace(" ,", ",").replace(" .", ".") == "circle, square, red cup."
        labels = list(dict.fromkeys(o["label"] for o in row["objects"]))
        assert labels == categories and all(o["routing"] == "[DET]" for o in row["objects"])
        assert len(row["objects"]) == model.config.object_decoder_config.num_queries  # each query: its best category


def test_each_sample_gets_its_own_expression_and_categories(tiny):
    model, processor = tiny
    inputs = processor(images=IMAGES, task="grounding", expression=["the red cup", "the dog"])
    answers = [processor.answer_token_ids(f"{e} [DET].") for e in ("the red cup", "the dog")]
    forced = [[t for t in row if t != -100] for row in inputs["forced_answer_ids"].tolist()]
    assert forced == answers
    assert REC_TEMPLATES[0].format(expression="the dog") in processor.tokenizer.decode(inputs["input_ids"][1])
    inputs = processor(images=IMAGES, task="pose", categories=[["cat"], ["dog", "cat"]])
    with torch.no_grad():
        texts = [r["text"] for r in processor.post_process_generation(model.generate(**inputs))]
    assert [t.replace(" ,", ",").replace(" .", ".") for t in texts] == ["cat.", "dog, cat."]


def test_region_and_text_tasks_generate_freely(tiny):
    model, processor = tiny
    inputs = processor(images=IMAGES, task="region_caption", regions=[[{"box": [2, 2, 30, 30]}], [{"point": [5, 5]}]])
    assert "forced_answer_ids" not in inputs and len(inputs["region_masks"]) == 2
    inputs = processor(images=IMAGES, task="vqa", text="How many shapes are there?")
    assert "How many shapes are there?" in processor.tokenizer.decode(inputs["input_ids"][0])
    inputs = processor(images=IMAGES[:1], task="interactive_segmentation", regions=[[{"point": [5, 5]}]])
    with torch.no_grad():
        objects = processor.post_process_generation(model.generate(**inputs), target_sizes=[(48, 64)])[0]["objects"]
    assert [o["routing"] for o in objects] == ["[SEG]"] and objects[0]["mask"].shape == (48, 64)


@pytest.mark.parametrize(("task", "kwargs", "match"), [
    ("segmentation", {}, "unknown task 'segmentation'"),
    ("detection", {}, "needs categories"),
    ("grounding", {}, "needs expression"),
    ("vqa", {}, "needs prompt"),
    ("region_caption", {}, "needs regions"),
])
def test_task_mistakes_are_named(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        task_request(task, **kwargs)


def test_every_task_has_a_question():
    given = {"categories": ["a"], "expression": "the a", "prompt": "why?", "num_regions": 1}
    for task in TASKS:
        assert task_request(task, **given).question


def test_default_post_processing_returns_what_a_person_would_draw(tiny):
    """Defaults: candidates scoring at least 0.3, and of those none overlapping a better one of its label by IoU > 0.5."""
    from torchvision.ops import box_iou

    model, processor = tiny
    inputs = processor(images=IMAGES, task="detection", categories=["circle", "square"])
    with torch.no_grad():
        out = model.generate(**inputs)
    every = processor.post_process_generation(out, threshold=0.0, nms_threshold=None)
    shown = processor.post_process_generation(out)
    for all_objects, kept in zip(every, shown):
        for label in ("circle", "square"):
            confident = [o for o in all_objects["objects"] if o["label"] == label and o["score"] >= 0.3]
            mine = [o for o in kept["objects"] if o["label"] == label]
            assert {o["score"] for o in mine} <= {o["score"] for o in confident}
            kept_boxes = torch.tensor([o["box"] for o in mine]).view(-1, 4)
            assert (box_iou(kept_boxes, kept_boxes).fill_diagonal_(0) <= 0.5).all()
            for candidate in confident:  # a confident candidate is kept, or a better kept one covers it
                if candidate["score"] not in {o["score"] for o in mine}:
                    better = [o for o in mine if o["score"] >= candidate["score"]]
                    overlap = box_iou(torch.tensor([candidate["box"]]), torch.tensor([o["box"] for o in better]).view(-1, 4))
                    assert (overlap > 0.5).any()


@pytest.mark.parametrize("task", ["detection", "pose", "instance_segmentation", "grounding", "interactive_segmentation",
                                  "referring_segmentation", "region_caption"])
def test_every_task_runs_in_bfloat16(task):
    """What `predict --dtype auto` picks on a GPU: decoders read their images and statistics in their own dtype."""
    from visionllm_hf.builder import build_tiny

    model, processor = build_tiny(seed=0)
    model = model.to(torch.bfloat16).eval()
    regions = [[{"point": [10, 10]}]] if task in ("interactive_segmentation", "region_caption") else None
    inputs = processor(images=IMAGES[:1], task=task, categories=["circle"], expression="the circle", regions=regions)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6)
    result = processor.post_process_generation(out, target_sizes=[(48, 64)], threshold=0.0)[0]
    routed = {"detection": "[DET]", "grounding": "[DET]", "instance_segmentation": "[DET]", "pose": "[POSE]"}
    if task in routed:
        assert result["objects"] and {o["routing"] for o in result["objects"]} == {routed[task]}
    elif task != "region_caption":
        assert [o["routing"] for o in result["objects"]] == ["[SEG]"]
