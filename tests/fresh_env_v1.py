"""Run in a subprocess: load a VisionLLM v1 checkpoint where visionllm_hf cannot be imported, decode objects.

Usage: python fresh_env_v1.py CHECKPOINT INPUTS.pt OUT.pt (INPUTS.pt: the processor's keyword arguments)
"""

import importlib.abc
import sys


class BlockVisionLLMHF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "visionllm_hf" or name.startswith("visionllm_hf."):
            raise ModuleNotFoundError(f"No module named '{name}' (blocked: this process stands for a fresh venv)")
        return None


sys.meta_path.insert(0, BlockVisionLLMHF())

import torch  # noqa: E402
from transformers import AutoModel, AutoProcessor  # noqa: E402


def main(checkpoint: str, inputs_file: str, out_file: str):
    processor_kwargs = torch.load(inputs_file, weights_only=False)
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    inputs = processor(**processor_kwargs)
    with torch.no_grad():
        decoded = model.decode_objects(**inputs, num_fields=5)
        logits = model(**inputs).logits
    results = processor.post_process_object_detection(decoded, model.config, processor_kwargs["categories"])
    modules = sorted({type(obj).__module__ for obj in (model, processor)})
    torch.save({"objects": decoded.logits, "logits": logits, "results": results, "modules": modules}, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:])
