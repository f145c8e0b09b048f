"""Checks of command-line arguments that fail before anything slow loads, in the user's terms."""

from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


def check_model_reference(model: str):
    """`--model` is a checkpoint folder, or else reads as a hub id (`org/name`); a missing folder fails here."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"--model {model} has no config.json: give a checkpoint folder (visionllm-hf build --out)")
        return
    if path.exists():
        raise ValueError(f"--model {model} is a file: give the checkpoint folder (with config.json)")
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ValueError(f"--model {model}: no such folder (check the path), and not a hub id (org/name)") from None


__all__ = ["check_model_reference"]
