"""Save and load LoRA fine-tunes: the PEFT adapter plus every other parameter the stage trained fully."""

from pathlib import Path

from peft import PeftModel
from safetensors.torch import load_file, save_file

EXTRA_WEIGHTS = "non_lora_trainables.safetensors"


def _is_adapter_parameter(name: str) -> bool:
    return "lora_" in name or "trainable_tokens" in name


def save_adapter(peft_model, folder: str | Path):
    """The adapter (`adapter_model.safetensors`) and the fully trained non-LLM modules (decoders, ...) beside it."""
    folder = Path(folder)
    peft_model.save_pretrained(folder)
    extra = {
        name.removeprefix("base_model.model."): parameter.detach().cpu().contiguous()
        for name, parameter in peft_model.named_parameters()
        if parameter.requires_grad and not _is_adapter_parameter(name)
    }
    if extra:
        save_file(extra, folder / EXTRA_WEIGHTS)


def load_adapter(base_model, folder: str | Path) -> PeftModel:
    """`base_model` (the checkpoint the fine-tune started from) with the saved adapter and extra weights."""
    folder = Path(folder)
    extra_file = folder / EXTRA_WEIGHTS
    if extra_file.exists():
        missing_in_model = set(load_file(extra_file)) - set(dict(base_model.named_parameters()))
        if missing_in_model:
            raise ValueError(f"{extra_file} holds weights the model lacks: {sorted(missing_in_model)[:5]}")
        base_model.load_state_dict(load_file(extra_file), strict=False)
    return PeftModel.from_pretrained(base_model, folder)


__all__ = ["EXTRA_WEIGHTS", "load_adapter", "save_adapter"]
