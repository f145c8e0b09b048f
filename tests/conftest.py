import pytest
import torch

from visionllm_hf.builder import build_tiny
from visionllm_hf.cli import main


@pytest.fixture(scope="session")
def tiny():
    """A random tiny model (CLIP + Llama) and its processor, in eval mode."""
    model, processor = build_tiny(seed=0)
    return model.eval(), processor


@pytest.fixture(scope="session")
def tiny_plain():
    """The tiny model without decoders: a chat model generating through transformers' own loop."""
    model, processor = build_tiny(seed=0, decoders=False)
    return model.eval(), processor


@pytest.fixture(scope="session", params=["tiny_plain", "tiny"])
def either_tiny(request):
    """Both generation paths: transformers' loop (no decoders) and the super-link loop (with decoders)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The folder `visionllm-hf build --preset tiny` writes (same seed as the `tiny` fixture)."""
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    assert main(["build", "--preset", "tiny", "--seed", "0", "--out", str(folder)]) == 0
    return folder


@pytest.fixture
def chat_prompt(tiny_plain):
    _, processor = tiny_plain

    def make(question: str, images: int = 1) -> str:
        content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    return make


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
