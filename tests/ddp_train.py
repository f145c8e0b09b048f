"""Run under torchrun: train with `visionllm-hf train` arguments, then every rank writes its weights."""

import os
import sys

import torch
from safetensors.torch import save_file

from visionllm_hf.trainer import train as train_module


def main():
    captured = {}
    original = train_module.VisionLLMTrainer.train

    def train_and_keep(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        captured["weights"] = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        return result

    train_module.VisionLLMTrainer.train = train_and_keep
    output = train_module.train(sys.argv[1:])
    rank = int(os.environ.get("RANK", 0))
    save_file(captured["weights"], str(output / f"rank{rank}.safetensors"))
    torch.distributed.barrier() if torch.distributed.is_initialized() else None


if __name__ == "__main__":
    main()
