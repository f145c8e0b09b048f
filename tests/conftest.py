import pytest
import torch

from visionllm_hf.builder import build_tiny, save_checkpoint


@pytest.fixture(scope="session")
def tiny():
    """A random tiny model (CLIP + Llama) and its processor, in eval mode."""
    model, processor = build_tiny(seed=0)
    return model.eval(), processor


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_checkpoint")
    save_checkpoint(*tiny, folder)
    return folder


@pytest.fixture
def chat_prompt(tiny):
    _, processor = tiny

    def make(question: str, images: int = 1) -> str:
        content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    return make


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
