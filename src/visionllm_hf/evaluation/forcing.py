"""Make `generate` give a chosen answer, tokenised exactly as training tokenises it (teacher forcing in `generate`).

`ForcedAnswer` lives with the model (`modeling/answer_forcing.py`, shipped with checkpoints, so the processor's
perception tasks work without this package); this module keeps the evaluation-side helpers.
"""

from ..modeling.answer_forcing import ForcedAnswer


def training_answer_ids(processor, answer: str) -> list[int]:
    """The ids the model samples to give `answer`, as training tokenises it (see `answer_token_ids`)."""
    return processor.answer_token_ids(answer)


def forced_generation_kwargs(processor, answers: list[str]) -> dict:
    """`generate` keyword arguments that make row `r` answer `answers[r]` (then end-of-sequence)."""
    encoded = [training_answer_ids(processor, answer) for answer in answers]
    return {
        "logits_processor": [ForcedAnswer(encoded, processor.tokenizer.eos_token_id)],
        "max_new_tokens": max(len(answer) for answer in encoded) + 1,
    }


__all__ = ["ForcedAnswer", "forced_generation_kwargs", "training_answer_ids"]
