"""Run in a subprocess: load a checkpoint where visionllm_hf cannot be imported, as on a user's machine.

Usage: python fresh_env_load.py CHECKPOINT IMAGES.npz PROMPTS.json OUT.pt
Writes the logits of the loaded model on the processed images and prompts, and a pipeline answer.
"""

import importlib.abc
import json
import sys


class BlockVisionLLMHF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "visionllm_hf" or name.startswith("visionllm_hf."):
            raise ModuleNotFoundError(f"No module named '{name}' (blocked: this process stands for a fresh venv)")
        return None


sys.meta_path.insert(0, BlockVisionLLMHF())

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, AutoProcessor, pipeline  # noqa: E402


def main(checkpoint: str, images_file: str, prompts_file: str, out_file: str):
    images = list(np.load(images_file).values())
    prompts = json.loads(open(prompts_file).read())
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    inputs = processor(images=images, text=prompts, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits

    chat = pipeline("image-text-to-text", model=checkpoint, trust_remote_code=True)
    messages = [{"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "text", "text": "Hi?"}]}]
    answer = chat(text=messages, max_new_tokens=5, generate_kwargs={"min_new_tokens": 5, "do_sample": False})

    loaded_modules = sorted({type(obj).__module__ for obj in (model, processor, processor.image_processor)})
    torch.save(
        {"logits": logits, "answer": answer[0]["generated_text"][-1]["content"], "modules": loaded_modules},
        out_file,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
