"""Run in a subprocess: load a VisionLLM v1 checkpoint where visionllm_hf cannot be imported, decode objects.

Usage: python fresh_env_v1.py CHECKPOINT INPUTS.pt OUT.pt (INPUTS.pt: the processor's keyword arguments)
"""

import sys

import fresh_env_load  # noqa: F401  (installs the import blocker: visionllm_hf, plus BLOCK_MODULES)
import torch
from transformers import AutoModel, AutoProcessor


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
    assert not any(name.split(".")[0] in fresh_env_load.BLOCKED for name in sys.modules)
    torch.save({"objects": decoded.logits, "logits": logits, "results": results, "modules": modules}, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:])
