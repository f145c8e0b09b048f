"""VisionLLM on a web page, as a Hugging Face Space (or locally: `python app.py`).

The Space serves `visionllm-hf app` for the checkpoint named by the `VISIONLLM_MODEL` variable (a hub id such as
`your-name/visionllm-shapes`, or a folder; default: the demo model shipped in the package). To publish the page
next to a checkpoint you pushed (`push_to_hub` or `visionllm-hf train --push_to_hub`):

1. create a Space with the Gradio SDK and put this file in it as `app.py`;
2. add a `requirements.txt` that installs this package with its `app` extra, e.g.
   `visionllm-hf[app] @ git+https://github.com/<owner>/visionllm-hf` (or a wheel you upload to the Space);
3. in the Space's settings, set the variable `VISIONLLM_MODEL` to the checkpoint's hub id (a private checkpoint
   also needs an `HF_TOKEN` secret that can read it).

The Space listens on 0.0.0.0:7860 (`GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT` override both).
"""

import os

from visionllm_hf.app import launch_app

if __name__ == "__main__":
    launch_app(
        os.environ.get("VISIONLLM_MODEL") or None,
        host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
