"""Run in a subprocess: load a checkpoint where visionllm_hf cannot be imported, as on a user's machine.

Usage: python fresh_env_load.py CHECKPOINT INPUTS.pt OUT.pt
INPUTS.pt holds the processor's keyword arguments (images, text, regions) and, optionally, `scripts`: answers
(token ids per row) to force through generation, with `generate_kwargs` for that call. Writes the loaded model's
logits on the inputs, a pipeline answer about the first image, the modules the classes came from and, with
scripts, the structured results.

The environment variable BLOCK_MODULES (comma separated, e.g. "diffusers") blocks more packages, as if they
were not installed either.
"""

import importlib.abc
import os
import sys

BLOCKED = ["visionllm_hf"] + [name for name in os.environ.get("BLOCK_MODULES", "").split(",") if name]


class BlockPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
            raise ModuleNotFoundError(f"No module named '{name}' (blocked: this process stands for a fresh venv)")
        return None


sys.meta_path.insert(0, BlockPackages())

import torch  # noqa: E402
from transformers import AutoModel, AutoProcessor, pipeline  # noqa: E402


class ForceAnswers:
    """Row r samples scripts[r][k] at step k, then EOS (the package's ForcedAnswer cannot be imported here)."""

    def __init__(self, scripts, eos):
        self.scripts, self.eos, self.step = scripts, eos, 0

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -float("inf"))
        for row, script in enumerate(self.scripts):
            forced[row, script[self.step] if self.step < len(script) else self.eos] = 0.0
        self.step += 1
        return forced


def main(checkpoint: str, inputs_file: str, out_file: str):
    processor_kwargs = torch.load(inputs_file, weights_only=False)
    scripts = processor_kwargs.pop("scripts", None)
    generate_kwargs = processor_kwargs.pop("generate_kwargs", {})
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    inputs = processor(**processor_kwargs, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits

    chat = pipeline("image-text-to-text", model=checkpoint, trust_remote_code=True)
    image = processor_kwargs["images"][0]
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi?"}]}]
    answer = chat(text=messages, max_new_tokens=5, generate_kwargs={"min_new_tokens": 5, "do_sample": False})

    loaded_modules = sorted({type(obj).__module__ for obj in (model, processor, processor.image_processor)})
    saved = {
        "logits": logits,
        "answer": answer[0]["generated_text"][-1]["content"],
        "modules": loaded_modules,
        "blocked_loaded": sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED),
    }
    if scripts is not None:
        forced = ForceAnswers(scripts, processor.tokenizer.eos_token_id)
        generated = model.generate(**inputs, max_new_tokens=20, logits_processor=[forced], **generate_kwargs)
        saved["results"] = generated.results
        saved["objects"] = processor.post_process_generation(generated)
    torch.save(saved, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:])
