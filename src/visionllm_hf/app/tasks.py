"""The tasks the page offers: their labels, what each needs from the user, and which a checkpoint can answer."""

from dataclasses import dataclass

CHAT = "chat"  # the page's multi-turn conversation; every other name is a task of the processor's task API


@dataclass(frozen=True)
class AppTask:
    """
    One choice of the page's task selector.

    Args:
        name (`str`): `chat`, or the processor's task name (`processor(..., task=name)`).
        label (`str`): what the page calls it.
        needs (`str`, *optional*): what the user gives besides the image: `text` (a question or instruction),
            `categories`, `expression` or `region` (a visual prompt drawn on the image).
        routing (`str`, *optional*): the routing name (`VisionLLMConfig.routing_decoders`) whose decoder answers it.
        needs_image (`bool`, *optional*, defaults to True): False for text to image only.
    """

    name: str
    label: str
    needs: str | None = None
    routing: str | None = None
    needs_image: bool = True


TASKS = (
    AppTask(CHAT, "chat / VQA", "text"),
    AppTask("caption", "caption"),
    AppTask("detection", "detection", "categories", "det"),
    AppTask("grounding", "grounding", "expression", "det"),
    AppTask("instance_segmentation", "instance segmentation", "categories", "det"),
    AppTask("referring_segmentation", "referring segmentation", "expression", "seg"),
    AppTask("pose", "pose", "categories", "pose"),
    AppTask("region_caption", "region caption", "region"),
    AppTask("region_classification", "region classification", "region"),
    AppTask("interactive_segmentation", "interactive segmentation", "region", "seg"),
    AppTask("text_to_image", "text to image", "text", "gen", needs_image=False),
    AppTask("image_editing", "image editing", "text", "edit"),
)
TASKS_BY_NAME = {task.name: task for task in TASKS}
TEXT_LABELS = {  # the label of the text box, by task
    CHAT: "Question (the conversation keeps going until you start a new one)",
    "text_to_image": "What to draw",
    "image_editing": "Editing instruction",
}
KEEP_BEST = {"grounding": 1}  # grounding finds one object: the best-scoring box, as `visionllm-hf demo` shows it


def available_tasks(config) -> list[AppTask]:
    """
    The tasks `config` (a `VisionLLMConfig`) can answer: text tasks always, region tasks when it has a region
    encoder, and each perception or generation task when a decoder answers its routing token.
    """
    routed = set(config.routing_decoders)
    has_regions = config.region_encoder_type is not None
    return [
        task for task in TASKS
        if (task.routing is None or task.routing in routed) and (task.needs != "region" or has_regions)
    ]


__all__ = ["CHAT", "KEEP_BEST", "TASKS", "TASKS_BY_NAME", "TEXT_LABELS", "AppTask", "available_tasks"]
