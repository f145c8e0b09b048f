"""Image reliance: does the answer depend on the image? A blind model scores well on text tasks whose answers the
question alone predicts (the most common count, the most common category), so accuracy alone cannot tell.

For each request (an image, a question, the reference answer and, for region questions, its regions) the answer
is scored teacher-forced, tokenised as training tokenises it: the mean cross-entropy per answer token with the
request's own image, and with the image of another request (the next one whose image differs: the same question
and regions on a wrong image). Image reliance is the difference, in nats per answer token:

    reliance = loss(wrong image) - loss(true image)

About 0 for a model that ignores the image; positive when the true image makes the right answer likelier.
"""

from pathlib import Path

import torch
import torch.nn.functional as F


def image_reliance(model, processor, requests: list[dict]) -> float | None:
    """
    `loss(wrong image) - loss(true image)` averaged over `requests` (dicts with `image`, `question`, `answer` and
    optional `regions`); None when fewer than two distinct images make a wrong image impossible.
    """
    wrong = _other_images([_key(r["image"]) for r in requests])
    if wrong is None:
        return None
    true_losses = [answer_loss(model, processor, r, r["image"]) for r in requests]
    wrong_losses = [answer_loss(model, processor, r, requests[j]["image"]) for r, j in zip(requests, wrong)]
    return sum(w - t for w, t in zip(wrong_losses, true_losses)) / len(requests)


def _key(image):
    """Paths compare by name, loaded images (arrays, PIL images) by identity."""
    return str(image) if isinstance(image, (str, Path)) else id(image)


def _other_images(images: list[str]) -> list[int] | None:
    """For each position, the next position (cyclically) whose image differs; None if all images are one."""
    if len(set(images)) < 2:
        return None
    others = []
    for index, image in enumerate(images):
        step = 1
        while images[(index + step) % len(images)] == image:
            step += 1
        others.append((index + step) % len(images))
    return others


@torch.no_grad()
def answer_loss(model, processor, request: dict, image) -> float:
    """Mean cross-entropy per token of `request["answer"]` after its question about `image` (teacher forced)."""
    question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": request["question"]}]}]
    prompt = processor.apply_chat_template(question, add_generation_prompt=True)
    full = processor.apply_chat_template([*question, {"role": "assistant", "content": request["answer"]}])
    regions = [[request["regions"]]] if request.get("regions") else None
    inputs = processor(images=[[image]], text=[full], regions=regions).to(model.device)
    ids = inputs["input_ids"]
    # the answer's tokens are the text's tail after the prompt (the image expands both alike)
    answer_length = len(processor.tokenizer(full)["input_ids"]) - len(processor.tokenizer(prompt)["input_ids"])
    prompt_length = ids.shape[1] - answer_length
    logits = model(**inputs).logits[0, prompt_length - 1 : -1].float()
    return F.cross_entropy(logits, ids[0, prompt_length:]).item()


__all__ = ["answer_loss", "image_reliance"]
