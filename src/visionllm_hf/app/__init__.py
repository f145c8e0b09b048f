"""A web page to try a checkpoint: `visionllm-hf app --model DIR` (the `app` extra: gradio).

Upload an image or pick an example, choose a task, click a visual prompt on the image, and see the annotated
answer, its text and its JSON; chat about the image over several turns. `app.py` at the repository root serves
the same page on Hugging Face Spaces.

    checks (`inputs.py`) -> request (`requests.py`) -> page (`ui.py`), started by `launch.py`
"""

from .checkpoint import LoadedCheckpoint, load_checkpoint
from .launch import launch_app
from .requests import Reply, Request, run_request
from .ui import build_app

__all__ = ["LoadedCheckpoint", "Reply", "Request", "build_app", "launch_app", "load_checkpoint", "run_request"]
