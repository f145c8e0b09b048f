import random

import pytest

from visionllm_hf.processing.templates import (
    NO_MATCH_ANSWER,
    TEMPLATES,
    parse_category_answer,
    parse_region_answer,
    referring_comprehension_answer,
    referring_comprehension_prompt,
    region_caption_prompt,
    region_classification_prompt,
)

COCO_SOME = ["person", "traffic light", "light", "dog", "hot dog", "cell phone"]


@pytest.mark.parametrize("count", [1, 2, 5])
def test_prompts_hold_one_placeholder_per_region(count):
    rng = random.Random(0)
    for detailed in (False, True):
        assert region_caption_prompt(count, detailed=detailed, rng=rng).count("<region>") == count
    prompt = referring_comprehension_prompt("the red ball", count, rng=rng)
    assert prompt.count("<region>") == count and "the red ball" in prompt
    assert prompt.endswith("Answer the question using the template Region [x].")


def test_every_template_has_the_regions_slot():
    for task, templates in TEMPLATES.items():
        assert templates and all("<regions>" in template for template in templates), task


def test_classification_prompt_guides_to_the_category_set():
    assert region_classification_prompt("COCO-80").endswith("Answer the question using COCO-80 category names.")
    assert region_classification_prompt().endswith("Answer the question with a single word or phrase.")
    assert region_classification_prompt().count("<region>") == 1


@pytest.mark.parametrize(
    "answer, expected",
    [("Region [2].", 2), ("region [11]", 11), ("It is Region 3.", 3), (NO_MATCH_ANSWER, None), ("a dog", None)],
)
def test_region_answers_parse_back_to_the_region_number(answer, expected):
    assert parse_region_answer(answer) == expected


def test_referring_answer_round_trips():
    for number in (None, 1, 4):
        assert parse_region_answer(referring_comprehension_answer(number)) == number


@pytest.mark.parametrize(
    "answer, expected",
    [("Dog", "dog"), ("hot dog.", "hot dog"), ("It is a traffic light", "traffic light"),
     ("a cell phone on the table", "cell phone"), ("a cat", None), ("Person!", "person")],
)
def test_category_answers_parse_to_the_longest_matching_name(answer, expected):
    assert parse_category_answer(answer, COCO_SOME) == expected
