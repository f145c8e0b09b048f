"""The checkpoint the page runs: loaded once when the app starts, with the tasks it can answer."""

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from ..demo import DEMO_MODEL
from .requests import Request, run_request
from .tasks import AppTask, available_tasks


@dataclass
class LoadedCheckpoint:
    """
    A VisionLLM v2 checkpoint ready to answer requests.

    Args:
        model: the model (`AutoModel`, eval mode, on its device).
        processor: its processor (`AutoProcessor`).
        name (`str`): the folder or hub id it came from (shown on the page).
        tasks (`list[AppTask]`): the tasks it can answer (`available_tasks`).
    """

    model: torch.nn.Module
    processor: object
    name: str
    tasks: list[AppTask]


def load_checkpoint(model: str | Path | None = None, device: str | None = None) -> LoadedCheckpoint:
    """
    Load `model` (a checkpoint folder or hub id; the shipped demo model by default) with `trust_remote_code`, on
    `device` (default: cuda when available, else cpu).

    Raises:
        ValueError: the checkpoint is not a VisionLLM v2 one (the page asks tasks through its processor's task API).
    """
    reference = str(model or DEMO_MODEL)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = AutoModel.from_pretrained(reference, trust_remote_code=True).to(device).eval()
    if loaded.config.model_type != "visionllm":
        raise ValueError(
            f"{reference} is a {loaded.config.model_type} checkpoint: the app runs VisionLLM v2 checkpoints "
            "(model_type visionllm)"
        )
    processor = AutoProcessor.from_pretrained(reference, trust_remote_code=True)
    return LoadedCheckpoint(loaded, processor, reference, available_tasks(loaded.config))


def warm_up(checkpoint: LoadedCheckpoint, image: Image.Image):
    """One caption and, when the model can, one detection on `image`, so the first user's request is not slower."""
    run_request(checkpoint, Request("caption", image))
    if any(task.name == "detection" for task in checkpoint.tasks):
        run_request(checkpoint, Request("detection", image, categories=["object"]))


__all__ = ["LoadedCheckpoint", "load_checkpoint", "warm_up"]
