"""One request of the page: ask the checkpoint, then draw the answer and write it as JSON.

Tasks are asked through the processor's task API (`processor(images, task=..., categories=..., ...)`) and chat
turns through its chat template; `model.generate` runs the routed decoders and `post_process_generation` gives the
objects in the image's pixels, drawn by `visualization.py`, as `visionllm-hf demo` does.
"""

import json
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..processing.special_tokens import REGION_TOKEN
from ..visualization import draw_objects, draw_visual_prompts
from .tasks import CHAT, KEEP_BEST
from .visual_prompt import COLOUR

MAX_NEW_TOKENS = 64  # a perception answer's forced structure always fits (see `_max_new_tokens`)


@dataclass
class Request:
    """
    What the page asks.

    Args:
        task (`str`): `chat` or a processor task name (see `tasks.py`).
        image (`PIL.Image`, *optional*): the RGB image (None only for `text_to_image`).
        text (`str`, *optional*): the question (chat), what to draw (text to image) or the editing instruction.
        categories (`list[str]`, *optional*), expression (`str`, *optional*): what perception tasks find.
        region (`dict`, *optional*): the visual prompt of region tasks (`{"box": [...]}` or `{"point": [...]}`, image
            pixels).
        history (`list[tuple[str, str]]`, *optional*): the chat's earlier (question, answer) turns.
        threshold (`float`, *optional*, defaults to 0.3): the `[DET]` / `[POSE]` score threshold.
    """

    task: str
    image: Image.Image | None
    text: str | None = None
    categories: list[str] | None = None
    expression: str | None = None
    region: dict | None = None
    history: list[tuple[str, str]] = field(default_factory=list)
    threshold: float = 0.3


@dataclass
class Reply:
    """
    What the page shows: `picture` (the annotated image, or the image `[GEN]` / `[EDIT]` made), the answer `text`,
    `record` (the structured answer, JSON-ready) and `warnings` (the library's warnings during the request).
    """

    picture: Image.Image | None
    text: str
    record: dict
    warnings: list[str]


def run_request(checkpoint, request: Request) -> Reply:
    """
    Answer `request` with `checkpoint` (a `LoadedCheckpoint`). The library's `ValueError` / `TypeError` for input
    it cannot take (a routing token typed in a question, a region outside the image, ...) pass through.
    """
    model, processor = checkpoint.model, checkpoint.processor
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # every request shows its own (others: the usual filters)
        inputs = model_inputs(processor, request)
        max_new_tokens = _max_new_tokens(inputs)
        inputs = inputs.to(device=model.device, dtype=model.dtype)
        with torch.inference_mode():
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answer = _answer(processor, generated, inputs, request)
    answer["objects"] = answer["objects"][: KEEP_BEST.get(request.task)]
    record = {
        "task": request.task,
        "question": _question(processor, inputs),
        "text": answer["text"],
        "objects": [_jsonable(obj) for obj in answer["objects"]],
        "regions": [request.region] if request.region else [],
        "images": [_made(made) for made in answer["images"]],
        "image_size": None if request.image is None else [request.image.height, request.image.width],
        "seconds": round(time.perf_counter() - start, 3),
    }
    return Reply(_picture(request, answer), answer["text"], record, _for_the_page(caught))


def _for_the_page(caught: list) -> list[str]:
    """
    The library's warnings about this input (UserWarning: a sample past the model's length, ...), once each, for the
    page; the others (deprecations) go to the console as usual.
    """
    shown = []
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            shown.append(str(warning.message))
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return list(dict.fromkeys(shown))


def model_inputs(processor, request: Request):
    """The processor's inputs: the chat template over the conversation, or the task API."""
    images = None if request.image is None else [request.image]
    regions = [[[request.region]]] if request.region else None
    if request.task == CHAT:
        return processor(images=images, text=[chat_prompt(processor, request)])
    return processor(images=images, task=request.task, text=request.text, categories=request.categories,
                     expression=request.expression, regions=regions)


def chat_prompt(processor, request: Request) -> str:
    """The conversation so far and the new question; the image leads the first turn."""
    lead = [{"type": "image"}] if request.image is not None else []
    messages = []
    for turn, (question, answer) in enumerate([*request.history, (request.text, None)]):
        content = [*lead, {"type": "text", "text": question}] if turn == 0 else question
        messages.append({"role": "user", "content": content})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def _max_new_tokens(inputs) -> int:
    forced = inputs.get("forced_answer_ids")
    return MAX_NEW_TOKENS if forced is None else max(MAX_NEW_TOKENS, forced.shape[1] + 1)


def _answer(processor, generated, inputs, request: Request) -> dict:
    """`post_process_generation`'s answer in the image's pixels (text only for a model without decoders)."""
    if hasattr(generated, "results"):
        size = None if request.image is None else [(request.image.height, request.image.width)]
        return processor.post_process_generation(generated, target_sizes=size, threshold=request.threshold)[0]
    sequences = generated if torch.is_tensor(generated) else generated.sequences
    text = processor.post_process_image_text_to_text(sequences[:, inputs["input_ids"].shape[1] :])[0]
    return {"text": text, "objects": [], "images": []}


def _picture(request: Request, answer: dict) -> Image.Image | None:
    """The image `[GEN]` / `[EDIT]` made, else the input image with the objects and the visual prompt drawn."""
    if answer["images"]:
        return answer["images"][0]["image"]
    if request.image is None:
        return None
    # the keypoint decoder's mask head is not trained on pose data (no masks): draw boxes and keypoints only
    drawn = [{**obj, "mask": None} if obj["routing"] == "[POSE]" else obj for obj in answer["objects"]]
    regions = [request.region] if request.region else []
    return draw_visual_prompts(draw_objects(request.image, drawn), regions, colour=COLOUR)


def _question(processor, inputs) -> str:
    """The last user turn as the model read it, its `<region>` placeholders kept (special tokens otherwise dropped)."""
    tokenizer = processor.tokenizer
    dropped = ({*tokenizer.all_special_ids, processor.image_token_id}) - {tokenizer.convert_tokens_to_ids(REGION_TOKEN)}
    ids = [token for token in inputs["input_ids"][0].tolist() if token not in dropped]
    prompt = tokenizer.decode(ids, skip_special_tokens=False)
    return prompt.split("USER:")[-1].strip().removesuffix("ASSISTANT:").strip()


def record_json(record: dict) -> str:
    """`record` as JSON text, one line per object (JSON that reads at a glance and parses back to `record`)."""
    lines = []
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join(f"  {json.dumps(item)}" for item in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}"


def _made(made: dict) -> dict:
    """An image `[GEN]` / `[EDIT]` made, described (the picture itself is shown)."""
    return {"label": made["label"], "routing": made["routing"], "size": [made["image"].height, made["image"].width]}


def _jsonable(obj: dict) -> dict:
    """An object with plain numbers: box and keypoints rounded to 0.1 px, the mask as its pixel count."""
    mask = obj.get("mask")
    return {
        "label": obj["label"],
        "routing": obj["routing"],
        "score": None if obj.get("score") is None else round(float(obj["score"]), 3),
        "box": None if obj.get("box") is None else [round(float(v), 1) for v in obj["box"]],
        "mask": None if mask is None else {"pixels": int(np.asarray(mask).sum())},
        "keypoints": None if obj.get("keypoints") is None else [
            [round(float(x), 1), round(float(y), 1), round(float(v), 3)] for x, y, v in obj["keypoints"]
        ],
    }


__all__ = ["MAX_NEW_TOKENS", "Reply", "Request", "chat_prompt", "model_inputs", "record_json", "run_request"]
