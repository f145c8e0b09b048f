"""Fine-tuning (`VisionLLMTrainer`, collators, stage presets) lands here with the training issue."""

__all__ = []
