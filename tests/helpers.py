"""Small helpers shared by the tests."""

import numpy as np


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HWC uint8 image of noise."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


class ScriptedTokens:
    """A logits processor that makes row r sample `scripts[r][k]` at its k-th sampling step (then EOS)."""

    def __init__(self, scripts: list[list[int]], eos_token_id: int):
        self.scripts = scripts
        self.eos_token_id = eos_token_id
        self.step = 0

    def __call__(self, input_ids, scores):
        forced = scores.new_full(scores.shape, -float("inf"))
        for row, script in enumerate(self.scripts):
            token = script[self.step] if self.step < len(script) else self.eos_token_id
            forced[row, token] = 0.0
        self.step += 1
        return forced
