"""Tokenizers: an offline byte-level BPE for tiny models, and adding VisionLLM's special tokens to any tokenizer."""

from importlib import resources

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AddedToken, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..processing.special_tokens import SPECIAL_TOKENS

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """
    A byte-level BPE trained on the package's built-in corpus: needs no download, encodes any text (every byte
    has a token), prepends `<s>`, pads on the left. VisionLLM's special tokens are not added here.
    """
    corpus = resources.files(__package__).joinpath("corpus.txt").read_text(encoding="utf-8").splitlines()
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, backend.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )


def add_special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """
    Add VisionLLM's special tokens (one id each, never split or normalised) and a pad token if missing.

    Returns:
        `dict[str, int]`: config field name -> token id, ready for `VisionLLMConfig(**ids)`.
    """
    tokens = [AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS.values()]
    tokenizer.add_tokens(tokens, special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD})
    ids = {field: tokenizer.convert_tokens_to_ids(token) for field, token in SPECIAL_TOKENS.items()}
    for field, token in SPECIAL_TOKENS.items():
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if encoded != [ids[field]]:
            raise ValueError(f"special token {token} encodes to {encoded}, expected the single id {ids[field]}")
    return ids


def add_video_tokens(model, processor) -> dict[str, int]:
    """
    Give a checkpoint built before video support its video tokens (`<video>`, `<vid_beg>`, `</vid_end>`): added to
    the tokenizer, new embedding rows (the mean of the others, transformers' `mean_resizing`), ids in the config.
    The video tokens themselves add no other parameters (see `VisionLLMModel.get_video_features`).
    """
    ids = add_special_tokens(processor.tokenizer)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=True)
    for field in ("video_token_id", "video_start_token_id", "video_end_token_id"):
        setattr(model.config, field, ids[field])
    processor.video_token_id = ids["video_token_id"]
    return ids


__all__ = ["add_special_tokens", "add_video_tokens", "train_tiny_tokenizer"]
