"""Tasks by name: the instruction templates training uses, and the answer structure perception is given.

`processor(images=..., task="detection", categories=["cat", "dog"])` asks the question the way training asked it
and, for perception, gives generation the answer's structure (`cat [DET], dog [DET].`), as VisionLLM v2 runs and
evaluates perception: the model still chooses nothing but the decoders' outputs, and the routing tokens'
queries and decoders run inside `generate` as in free generation. Text tasks (caption, vqa, region captions and
classification) generate freely.

This file ships with every checkpoint (``trust_remote_code``): it imports only the standard library and its
sibling `templates`.
"""

import random
from dataclasses import dataclass

from .templates import region_caption_prompt, region_classification_prompt

DETECTION_TEMPLATES = [
    "Can you analyze the image and identify the <class> present?",
    "In this image, could you detect all instances of <class>?",
    "Please detect the objects you find that belong to the <class> category in the image.",
    "Please perform object detection on this image to identify <class>.",
    "I need your expertise to locate <class> in this image.",
]
SEGMENTATION_TEMPLATES = [
    "Can you segment the <class> in the image?",
    "Please segment all instances of <class> in this image.",
    "Could you provide the instance masks of <class>?",
]
POSE_TEMPLATES = [
    "Please estimate the pose of every <class> in the image.",
    "Can you find the keypoints of each <class>?",
    "Detect the <class> in the image and their keypoints.",
]
INTERACTIVE_TEMPLATES = [
    "Please segment the object indicated by <region>.",
    "Could you give me the mask of the object in <region>?",
    "Segment what <region> points to.",
]
IN_CONTEXT_TEMPLATES = [  # VisionLLM v2's in-context prompts: examples with a visual prompt, then the query image
    "<examples> Find all of them in the last image.",
    "<examples> Detect every one of them in the last image.",
]
IN_CONTEXT_SEGMENTATION_TEMPLATES = [
    "<examples> Segment all of them in the last image.",
    "<examples> Give the mask of every one of them in the last image.",
]
CAPTION_TEMPLATES = [
    "Describe the image briefly.",
    "Give a short caption of the image.",
    "What does this image show? Answer in one sentence.",
]
REC_TEMPLATES = [  # expressions bring their own article ("the red circle")
    "Where is {expression} in the image?",
    "Please find {expression}.",
    "Could you tell me where {expression} is?",
]
RES_TEMPLATES = [
    "Please segment {expression}.",
    "Can you give the mask of {expression}?",
]
GENERATION_TEMPLATES = [
    "Please generate an image of {prompt}",
    "Draw this for me: {prompt}",
    "Can you create a picture of {prompt}",
]

TASKS = {  # task -> what it needs besides the image
    "caption": (),
    "vqa": ("prompt",),
    "prompt": ("prompt",),
    "detection": ("categories",),
    "instance_segmentation": ("categories",),
    "pose": ("categories",),
    "grounding": ("expression",),
    "referring_segmentation": ("expression",),
    "region_caption": ("regions",),
    "region_classification": ("regions",),
    "interactive_segmentation": ("regions",),
    "text_to_image": ("prompt",),  # no image: [GEN] draws one
    "image_editing": ("prompt",),  # the instruction; [EDIT] edits the image
}
NEEDS_NO_IMAGE = ("text_to_image",)


def in_context_question(template: str, num_examples: int) -> str:
    """An in-context template with its examples named: `Examples: <region> in image 1, <region> in image 2.`"""
    examples = ", ".join(f"<region> in image {number}" for number in range(1, num_examples + 1))
    return template.replace("<examples>", f"Examples: {examples}.")


@dataclass
class TaskRequest:
    """One task asked of one image: the question, and the answer structure generation follows (None: free)."""

    question: str
    answer: str | None = None


def task_request(
    task: str,
    *,
    categories: list[str] | None = None,
    expression: str | None = None,
    prompt: str | None = None,
    num_regions: int = 0,
    rng: random.Random | None = None,
) -> TaskRequest:
    """
    The question (the first template, or a random one with `rng`) and the forced answer of `task`.

    Args:
        task (`str`): one of `TASKS`; `task.replace("-", "_")` is accepted too (`instance-segmentation`).
        categories (`list[str]`): what to find, for `detection`, `instance_segmentation` and `pose`.
        expression (`str`): the object to ground (`grounding`) or segment (`referring_segmentation`).
        prompt (`str`): the question of `vqa` / `prompt`, what `text_to_image` draws, or the instruction of
            `image_editing`.
        num_regions (`int`): the `<region>`s of the image (region tasks need at least one).
    """
    task = task.replace("-", "_")
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; choose from {', '.join(TASKS)}")
    given = {"categories": categories, "expression": expression, "prompt": prompt, "regions": num_regions or None}
    missing = [need for need in TASKS[task] if not given[need]]
    if missing:
        raise ValueError(f"task '{task}' needs {missing[0]} (e.g. {_EXAMPLES[missing[0]]})")
    pick = (lambda templates: templates[0]) if rng is None else rng.choice
    if task in ("vqa", "prompt"):
        return TaskRequest(prompt)
    if task == "caption":
        return TaskRequest(pick(CAPTION_TEMPLATES))
    if task in ("detection", "instance_segmentation", "pose"):
        names = [str(name).strip() for name in categories]
        templates = {"detection": DETECTION_TEMPLATES, "instance_segmentation": SEGMENTATION_TEMPLATES}.get(task, POSE_TEMPLATES)
        routing = "[POSE]" if task == "pose" else "[DET]"
        answer = ", ".join(f"{name} {routing}" for name in names) + "."
        return TaskRequest(pick(templates).replace("<class>", ", ".join(names)), answer)
    if task == "grounding":
        return TaskRequest(pick(REC_TEMPLATES).format(expression=expression), f"{expression} [DET].")
    if task == "referring_segmentation":
        return TaskRequest(pick(RES_TEMPLATES).format(expression=expression), f"{expression} [SEG].")
    if task == "interactive_segmentation":
        return TaskRequest(pick(INTERACTIVE_TEMPLATES), "[SEG].")
    if task == "text_to_image":
        return TaskRequest(pick(GENERATION_TEMPLATES).format(prompt=prompt), f"{prompt.rstrip('.')} [GEN].")
    if task == "image_editing":
        return TaskRequest(prompt, f"{prompt.rstrip('.')} [EDIT].")
    if task == "region_caption":
        return TaskRequest(region_caption_prompt(num_regions, rng=rng))
    return TaskRequest(region_classification_prompt(rng=rng))


_EXAMPLES = {
    "categories": "categories=['cat', 'dog']",
    "expression": "expression='the red cup'",
    "prompt": "text='How many cats are there?'",
    "regions": "regions=[[{'box': [x1, y1, x2, y2]}]] and a <region>",
}

__all__ = [
    "CAPTION_TEMPLATES",
    "DETECTION_TEMPLATES",
    "GENERATION_TEMPLATES",
    "INTERACTIVE_TEMPLATES",
    "IN_CONTEXT_SEGMENTATION_TEMPLATES",
    "IN_CONTEXT_TEMPLATES",
    "NEEDS_NO_IMAGE",
    "POSE_TEMPLATES",
    "REC_TEMPLATES",
    "RES_TEMPLATES",
    "SEGMENTATION_TEMPLATES",
    "TASKS",
    "TaskRequest",
    "in_context_question",
    "task_request",
]
