"""Model card templates rendered through `huggingface_hub.ModelCard` land here with the training issue."""

__all__ = []
