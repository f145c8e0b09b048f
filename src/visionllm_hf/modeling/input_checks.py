"""Checks on model inputs that would otherwise give silent wrong answers, with errors in the user's terms.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and safetensors (which
transformers itself requires).
"""

import warnings
from contextlib import contextmanager

import torch
from safetensors import SafetensorError


def check_left_padding(attention_mask: torch.Tensor | None):
    """
    Generation appends to the end of every row, so a batch must be padded on the left: a right-padded row would be
    answered from a pad position.
    """
    if attention_mask is None or attention_mask.dim() != 2 or attention_mask.shape[1] < 2:
        return
    mask = attention_mask.bool()
    padded_after_a_token = (mask[:, :-1] & ~mask[:, 1:]).any(dim=1)
    if padded_after_a_token.any():
        row = int(padded_after_a_token.nonzero()[0])
        raise ValueError(
            f"row {row} of attention_mask is padded on the right; generation continues every row from its last "
            "column, so batches must be padded on the left: call the processor with padding_side='left' (its "
            "default) for generation"
        )


def warn_past_positions(length: int, max_positions: int | None, what: str):
    """Warn when a sequence runs past the positions the LLM was built for (valid with RoPE, but untrained)."""
    if max_positions is not None and length > max_positions:
        warnings.warn(
            f"{what} is {length} tokens long, more than the {max_positions} positions the language model was "
            "trained for: answers past that length are unreliable. Use fewer or smaller images (max_tiles), "
            "shorter text or fewer new tokens.",
            stacklevel=3,
        )


def generation_length(input_ids: torch.Tensor | None, kwargs: dict, generation_config) -> int:
    """Prompt length plus the new tokens `generate` may add (its `max_new_tokens`, else `max_length`)."""
    prompt = 0 if input_ids is None else input_ids.shape[-1]
    if "inputs_embeds" in kwargs and kwargs["inputs_embeds"] is not None:
        prompt = kwargs["inputs_embeds"].shape[1]
    config = kwargs.get("generation_config") or generation_config
    new_tokens = kwargs.get("max_new_tokens", config.max_new_tokens)
    if new_tokens is None:
        return max(prompt, kwargs.get("max_length", config.max_length) or prompt)
    return prompt + new_tokens


@contextmanager
def weights_file_errors(checkpoint):
    """safetensors' own errors ("incomplete metadata", "header too small") name neither the file nor the fix."""
    try:
        yield
    except SafetensorError as error:
        raise OSError(
            f"could not read the weights of {checkpoint} (model.safetensors): {error}. The file is truncated or "
            "corrupt: save or download the checkpoint again"
        ) from error


__all__ = ["check_left_padding", "generation_length", "warn_past_positions", "weights_file_errors"]
