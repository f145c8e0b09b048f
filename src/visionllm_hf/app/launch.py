"""Start the page: load the checkpoint once, warm it up, serve (`visionllm-hf app`, and `app.py` on Spaces)."""

import time
from pathlib import Path

from .checkpoint import load_checkpoint, warm_up
from .examples import example_images
from .ui import CSS, THEME, build_app

MAX_FILE_SIZE = "50mb"  # uploads past it are refused by gradio before they reach the app's own checks


def launch_app(
    model: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str | None = None,
    **launch_kwargs,
):
    """
    Serve the page for `model` (a checkpoint folder or hub id; the shipped demo model by default) at
    `http://host:port`, blocking until the server stops.

    Args:
        model (`str` or `Path`, *optional*): the checkpoint, loaded once with `trust_remote_code`.
        host (`str`, *optional*, defaults to `"127.0.0.1"`): the address to listen on (`0.0.0.0` on Spaces).
        port (`int`, *optional*, defaults to 7860): the port.
        device (`str`, *optional*): where the model runs (default: cuda when available, else cpu).
        **launch_kwargs: passed to `gradio.Blocks.launch`.
    """
    start = time.perf_counter()
    checkpoint = load_checkpoint(model, device)
    examples = example_images()
    warm_up(checkpoint, examples[0].image)
    app = build_app(checkpoint, examples)
    app.queue(default_concurrency_limit=1)  # one model: requests take turns
    print(f"{checkpoint.name} loaded and warmed up in {time.perf_counter() - start:.1f} s", flush=True)
    app.launch(server_name=host, server_port=port, show_error=True, max_file_size=MAX_FILE_SIZE, theme=THEME, css=CSS,
               **launch_kwargs)


__all__ = ["launch_app"]
