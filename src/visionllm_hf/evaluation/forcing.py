"""Make `generate` give a chosen answer (teacher forcing inside `generate`), tokenised exactly as training does."""

import torch

from ..trainer.collator import VisionLLMCollator


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


def training_answer_ids(processor, answer: str) -> list[int]:
    """
    The ids the model samples to give `answer`: the answer's tokens in a training sequence (the chat template's
    assistant turn, labelled as `VisionLLMCollator` labels it), without the `<query>` tokens generation inserts
    itself and without the closing end-of-sequence token. Tokenising the answer alone would differ at its first
    token (`circle` -> `c ir cle` instead of `Ġcircle` after `ASSISTANT:`).
    """
    messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": answer}]
    text = processor.insert_queries(processor.apply_chat_template(messages, tokenize=False))
    input_ids = processor.tokenizer([text], return_tensors="pt")["input_ids"]
    labels = VisionLLMCollator(processor).answer_labels(input_ids)[0]
    ids = labels[labels != -100].tolist()
    if not ids or ids[-1] != processor.tokenizer.eos_token_id:
        raise ValueError(f"could not find the answer {answer!r} in its training sequence {text!r}")
    return ids[:-1]


def forced_generation_kwargs(processor, answers: list[str]) -> dict:
    """`generate` keyword arguments that make row `r` answer `answers[r]` (then end-of-sequence)."""
    encoded = [training_answer_ids(processor, answer) for answer in answers]
    return {
        "logits_processor": [ForcedAnswer(encoded, processor.tokenizer.eos_token_id)],
        "max_new_tokens": max(len(answer) for answer in encoded) + 1,
    }


__all__ = ["ForcedAnswer", "forced_generation_kwargs", "training_answer_ids"]
