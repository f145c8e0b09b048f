"""Generation that gives a chosen answer: teacher forcing inside `generate`.

Perception is run and evaluated with the answer's structure given (the categories to detect, the expression to
ground), as VisionLLM v2 does: the routing tokens' queries, the KV cache and the decoders then run exactly as in
free generation, and only the decoders' outputs are the model's. The processor makes `forced_answer_ids` for a
task (`processor(..., task="detection", categories=[...])`) and `generate` reads them.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch.
"""

import torch

NO_ANSWER = -100  # pads the rows of `forced_answer_ids`


class ForcedAnswer:
    """Row `r` samples `answers[r][k]` at its k-th sampling step, then end-of-sequence (an empty answer: free)."""

    def __init__(self, answers: list[list[int]], eos_token_id: int):
        self.answers = answers
        self.eos_token_id = eos_token_id
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        forced = scores.clone()
        for row, answer in enumerate(self.answers):
            if answer:
                forced[row] = -float("inf")
                forced[row, answer[self.step] if self.step < len(answer) else self.eos_token_id] = 0.0
        self.step += 1
        return forced


def forced_answers(forced_answer_ids: torch.LongTensor) -> list[list[int]]:
    """The processor's padded `(batch, length)` ids as one list per row (padding `NO_ANSWER` dropped)."""
    return [[int(token) for token in row if token != NO_ANSWER] for row in forced_answer_ids.tolist()]


def generate_kwargs_with_forced_answers(kwargs: dict, eos_token_id: int) -> dict:
    """
    `generate` keyword arguments with `forced_answer_ids` turned into a `ForcedAnswer` logits processor, and
    `max_new_tokens` at least the longest answer plus its end-of-sequence token (a smaller budget would cut
    categories off the answer).
    """
    forced = kwargs.pop("forced_answer_ids", None)
    if forced is None:
        return kwargs
    if (kwargs.get("num_beams") or 1) > 1 or (kwargs.get("num_return_sequences") or 1) > 1:
        raise ValueError("forced answers (a perception task) give one answer per image: use num_beams=1")
    answers = forced_answers(forced)
    processors = list(kwargs.get("logits_processor") or [])
    kwargs["logits_processor"] = [*processors, ForcedAnswer(answers, eos_token_id)]
    kwargs["max_new_tokens"] = max(kwargs.get("max_new_tokens") or 0, max(map(len, answers)) + 1)
    return kwargs


__all__ = ["NO_ANSWER", "ForcedAnswer", "forced_answers", "generate_kwargs_with_forced_answers"]
