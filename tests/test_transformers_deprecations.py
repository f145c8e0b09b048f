"""Early warning for the next transformers rename.

transformers announces a removal one release or more before it makes it: a `FutureWarning` /
`DeprecationWarning`, or a "deprecated" line from its logger. Forward, generate, save and load of our models
(v2 with and without decoders, v1; through the package and through the shipped remote code) must raise none,
so CI fails on the release that announces a removal, before the release that removes it.
"""

import logging
import warnings
from contextlib import contextmanager

import pytest
import torch
from transformers import AutoModel, AutoProcessor, pipeline
from transformers.utils import logging as transformers_logging

from visionllm_hf.builder import build_tiny, save_checkpoint
from visionllm_hf.builder.v1 import build_tiny_v1

from .helpers import ScriptedTokens, random_image


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        message = record.getMessage()
        if "deprecat" in message.lower():
            self.messages.append(f"{record.name}: {message}")


@contextmanager
def no_deprecation_notices():
    """Fail if transformers warns of a deprecation inside the block (log lines included)."""
    transformers_logging.warning_once.cache_clear()  # notices given earlier in the session come again
    handler = _Collect()
    logger = transformers_logging.get_logger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        logger.removeHandler(handler)
    notices = [
        f"{warning.category.__name__} at {warning.filename}:{warning.lineno}: {warning.message}"
        for warning in caught
        if issubclass(warning.category, (FutureWarning, DeprecationWarning))
    ] + handler.messages
    assert not notices, "transformers deprecation notices on our code paths:\n" + "\n".join(notices)


@pytest.mark.parametrize("decoders", [False, True], ids=["plain", "decoders"])
def test_forward_generate_save_and_load_raise_no_deprecation_notice(decoders, tmp_path):
    with no_deprecation_notices():
        model, processor = build_tiny(seed=0, decoders=decoders)
        model.eval()
        images = [random_image(40, 90, seed=1), random_image(64, 64, seed=2)]
        inputs = processor(images=images, text=["<image> What is <region>?", "<image> Find it."],
                           regions=[[{"box": [2, 2, 30, 20]}], []])
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        model(**inputs, labels=labels).loss.backward()
        with torch.no_grad():
            if decoders:
                script = [processor.tokenizer.encode(answer, add_special_tokens=False)
                          for answer in ("a [DET]", "it [SEG] <LOC>")]
                forced = ScriptedTokens(script, processor.tokenizer.eos_token_id)
                model.generate(**inputs, max_new_tokens=8, logits_processor=[forced])
            else:
                model.generate(**inputs, max_new_tokens=4, do_sample=False)
                model.generate(**inputs, max_new_tokens=4, do_sample=True, top_k=5)
        save_checkpoint(model, processor, tmp_path)
        for trust_remote_code in (False, True):
            loaded = AutoModel.from_pretrained(tmp_path, trust_remote_code=trust_remote_code).eval()
            loaded_processor = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=trust_remote_code)
            with torch.no_grad():
                loaded(**loaded_processor(images=images, text=["<image> a", "<image> b"]))
        chat = pipeline("image-text-to-text", model=str(tmp_path), trust_remote_code=True)
        message = [{"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "text", "text": "Hi?"}]}]
        chat(text=message, max_new_tokens=3)


def test_v1_forward_generate_save_and_load_raise_no_deprecation_notice(tmp_path):
    with no_deprecation_notices():
        model, processor = build_tiny_v1(seed=0)
        model.eval()
        inputs = processor(images=[random_image(64, 64)], text=["<image> Please detect <class>."], categories=[["a"]])
        with torch.no_grad():
            model(**inputs)
            model.generate(**inputs, max_new_tokens=3, do_sample=False)
            model.decode_objects(**inputs, num_fields=5)
        model.save_pretrained(tmp_path)
        processor.save_pretrained(tmp_path)
        AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
        AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
