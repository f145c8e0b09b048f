"""A logits processor that makes each row generate a given answer: teacher forcing inside `generate`."""

import torch


class ForcedAnswer:
    """
    Row `r` samples `answers[r][k]` at its k-th sampling step, then end-of-sequence. Used to evaluate decoders
    with the answer's structure given (the categories to detect, the expression to ground), as VisionLLM v2
    evaluates perception, while the queries, KV cache and decoders run exactly as in free generation.
    """

    def __init__(self, answers: list[list[int]], eos_token_id: int):
        self.answers = answers
        self.eos_token_id = eos_token_id
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        forced = torch.full_like(scores, -float("inf"))
        for row, answer in enumerate(self.answers):
            forced[row, answer[self.step] if self.step < len(answer) else self.eos_token_id] = 0.0
        self.step += 1
        return forced


def forced_generation_kwargs(tokenizer, answers: list[str]) -> dict:
    """`generate` keyword arguments that make row `r` answer `answers[r]` (then end-of-sequence)."""
    encoded = [tokenizer.encode(answer, add_special_tokens=False) for answer in answers]
    return {
        "logits_processor": [ForcedAnswer(encoded, tokenizer.eos_token_id)],
        "max_new_tokens": max(len(answer) for answer in encoded) + 1,
    }


__all__ = ["ForcedAnswer", "forced_generation_kwargs"]
