"""Small helpers shared by the tests."""

import numpy as np


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HWC uint8 image of noise."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# Forcing given answers through generate is part of the package (evaluation uses it too).
from visionllm_hf.evaluation.forcing import ForcedAnswer as ScriptedTokens  # noqa: E402,F401
