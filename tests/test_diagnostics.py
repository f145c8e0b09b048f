"""Diagnostics of a blind model: the image tokens' norm ratio and spread (training logs), image reliance (eval)."""

import copy

import pytest
import torch

from visionllm_hf.builder import build_tiny
from visionllm_hf.evaluation.reliance import _other_images, answer_loss, image_reliance
from visionllm_hf.trainer.diagnostics import image_token_statistics

from .helpers import random_image


@pytest.fixture(scope="module")
def plain():
    model, processor = build_tiny(seed=0, decoders=False)
    return model.eval(), processor


def batch(processor, seed: int = 0):
    images = [[random_image(40, 60, seed=seed)], [random_image(50, 50, seed=seed + 1)]]
    return processor(images=images, text=["<image> What is there?", "<image> Count the shapes."])


def statistics(model, inputs) -> dict[str, float]:
    with torch.no_grad():
        outputs = model(**inputs)
    return {name: float(value) for name, value in image_token_statistics(model, inputs, outputs).items()}


def test_norm_ratio_follows_the_projector_scale(plain):
    model, processor = plain
    inputs = batch(processor)
    before = statistics(model, inputs)
    louder = copy.deepcopy(model)
    with torch.no_grad():
        louder.model.multi_modal_projector.linear_2.weight.mul_(10)
        louder.model.multi_modal_projector.linear_2.bias.mul_(10)
    after = statistics(louder, inputs)
    assert after["image_token_norm"] == pytest.approx(10 * before["image_token_norm"], rel=1e-4)
    assert after["image_token_spread"] == pytest.approx(before["image_token_spread"], abs=1e-5)  # direction kept
    assert before["image_token_spread"] > 0.01


def test_spread_is_zero_when_every_image_token_is_alike(plain):
    model, processor = plain
    blind = copy.deepcopy(model)
    with torch.no_grad():
        blind.model.multi_modal_projector.linear_2.weight.zero_()  # every token = the bias
        blind.model.multi_modal_projector.linear_2.bias.fill_(0.5)
    result = statistics(blind, batch(processor))
    assert result["image_token_spread"] == pytest.approx(0.0, abs=1e-6)


def test_text_only_batch_has_no_statistics(plain):
    model, processor = plain
    inputs = processor(text=["Hello there"])
    with torch.no_grad():
        outputs = model(**inputs)
    assert image_token_statistics(model, inputs, outputs) == {}


def test_wrong_image_is_always_another_image():
    images = ["a", "a", "b", "c", "c"]
    others = _other_images(images)
    assert all(images[j] != images[i] for i, j in enumerate(others))
    assert _other_images(["a", "a"]) is None


def requests():
    return [{"image": random_image(40 + 5 * i, 60, seed=i), "question": "How many shapes are there?",
             "answer": str(i + 1)} for i in range(4)]


def test_reliance_is_zero_for_a_model_that_cannot_see(plain):
    model, processor = plain
    blind = copy.deepcopy(model)
    with torch.no_grad():
        blind.model.multi_modal_projector.linear_2.weight.zero_()
    # the images all have one tile layout, so the blind model's inputs differ in nothing but the pixels
    same_size = [{**r, "image": random_image(48, 48, seed=i)} for i, r in enumerate(requests())]
    assert image_reliance(blind, processor, same_size) == pytest.approx(0.0, abs=1e-6)
    assert image_reliance(model, processor, same_size) != pytest.approx(0.0, abs=1e-4)


def test_answer_loss_scores_the_answer_tokens_and_end_of_sequence(plain):
    """The loss is over the answer as training tokenises it (`answer_token_ids`) and its closing `</s>`."""
    model, processor = plain
    request = requests()[0]
    answer = [*processor.answer_token_ids("3 shapes"), processor.tokenizer.eos_token_id]
    question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": request["question"]}]}]
    full = processor.apply_chat_template([*question, {"role": "assistant", "content": "3 shapes"}])
    inputs = processor(images=[[request["image"]]], text=[full])
    assert inputs["input_ids"][0, -len(answer):].tolist() == answer
    with torch.no_grad():
        log_probs = model(**inputs).logits[0, -len(answer) - 1 : -1].log_softmax(-1)
    expected = -log_probs[torch.arange(len(answer)), torch.tensor(answer)].mean().item()
    loss = answer_loss(model, processor, {**request, "answer": "3 shapes"}, request["image"])
    assert loss == pytest.approx(expected, rel=1e-5)
