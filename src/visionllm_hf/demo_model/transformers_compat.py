"""What differs between the transformers releases this package supports (setup.py's range; CI tests both ends).

transformers 5.24 renamed the KV cache from `past_key_values` to `cache`: in model outputs (a field), in every
model's `forward` (an argument) and in `generate`'s model inputs. Older names still work there but warn, and a
later release removes them, so the code here speaks whichever name the installed release uses.

This file ships with every checkpoint (``trust_remote_code``): it imports only transformers.
"""

import warnings

from transformers.modeling_outputs import BaseModelOutputWithPast

# What transformers' Trainer passes to a model's `forward` for its loss (`loss_function`), not for the LLM:
# gradient-accumulation normalisation and the pre-shifted labels of sequence / context parallelism.
LOSS_KWARGS = ("num_items_in_batch", "shift_labels", "ignore_index")

CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def output_cache(outputs):
    """The KV cache of a transformers model output, read by its current name (no deprecation notice)."""
    return getattr(outputs, CACHE_NAME)


def cache_argument(cache) -> dict:
    """`{name: cache}` to pass a KV cache to a transformers model's `forward` under its current name."""
    return {CACHE_NAME: cache}


def merge_cache_arguments(cache, past_key_values):
    """One cache from the two names a `forward` may be called with (`generate` uses the release's own)."""
    if cache is not None and past_key_values is not None:
        raise ValueError("pass the KV cache as `cache` or as `past_key_values`, not both")
    if past_key_values is not None and CACHE_NAME == "cache":  # as transformers' own models warn from 5.24
        warnings.warn("`past_key_values` is deprecated since transformers 5.24: pass the KV cache as `cache`",
                      FutureWarning, stacklevel=3)
    return cache if cache is not None else past_key_values


__all__ = ["CACHE_NAME", "LOSS_KWARGS", "cache_argument", "merge_cache_arguments", "output_cache"]
