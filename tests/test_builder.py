import pytest
import torch
from transformers import (
    AutoModel,
    AutoProcessor,
    CLIPConfig,
    CLIPModel,
    CLIPVisionModel,
    LlamaForCausalLM,
)

from visionllm_hf.builder import train_tiny_tokenizer
from visionllm_hf.builder.presets import tiny_text_config, tiny_vision_config
from visionllm_hf.cli import main
from visionllm_hf.processing import SPECIAL_TOKENS

from .helpers import random_image


def parse_counts(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].replace(",", "").isdigit():
            counts[parts[0]] = int(parts[1].replace(",", ""))
    return counts


def test_meta_build_of_the_paper_sizes_counts_parameters(capsys):
    assert main(["build", "--preset", "visionllm-v2", "--meta"]) == 0
    counts = parse_counts(capsys.readouterr().out)
    # CLIP ViT-L/14-336 has 303-305 M parameters, Vicuna-7B 6.7-6.8 B (model cards of both)
    assert 303e6 <= counts["vision_tower"] <= 305e6
    assert 6.7e9 <= counts["llm"] <= 6.8e9


def test_tiny_preset_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert main(["build", "--preset", "tiny", "--out", str(tmp_path)]) == 0
    model = AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    inputs = processor(images=[random_image(40, 90)], text=["<image> what"])
    assert torch.isfinite(model(**inputs).logits).all()
    assert parse_counts(capsys.readouterr().out)["total"] == sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def pretrained_parts(tmp_path_factory):
    """A tiny CLIP vision tower, a tiny CLIP dual encoder, a tiny Llama and a tokenizer, saved as a user has them."""
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(1)
    tokenizer = train_tiny_tokenizer()
    tokenizer.save_pretrained(root / "tokenizer")
    CLIPVisionModel(tiny_vision_config()).save_pretrained(root / "clip_vision")
    dual = CLIPConfig(
        vision_config=tiny_vision_config().to_dict(),
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )
    CLIPModel(dual).save_pretrained(root / "clip_dual")
    LlamaForCausalLM(tiny_text_config(len(tokenizer))).save_pretrained(root / "llama")
    return root


@pytest.mark.parametrize("vision", ["clip_vision", "clip_dual"])
def test_assembly_from_local_folders_keeps_the_pretrained_weights(pretrained_parts, vision, tmp_path):
    out = tmp_path / "assembled"
    args = ["build", "--vision", str(pretrained_parts / vision), "--llm", str(pretrained_parts / "llama"),
            "--tokenizer", str(pretrained_parts / "tokenizer"), "--out", str(out)]
    assert main(args) == 0
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)

    source = AutoModel.from_pretrained(pretrained_parts / vision)
    source_vision = (source.vision_model if vision == "clip_dual" else source).state_dict()
    for name, tensor in model.model.vision_tower.state_dict().items():
        assert torch.equal(tensor, source_vision[name]), name

    source_llm = LlamaForCausalLM.from_pretrained(pretrained_parts / "llama")
    old_vocab = source_llm.config.vocab_size
    embeddings = source_llm.get_input_embeddings().weight
    for name, tensor in model.model.language_model.state_dict().items():
        if name == "embed_tokens.weight":
            assert torch.equal(tensor[:old_vocab], embeddings)
            assert torch.allclose(tensor[old_vocab:], embeddings.mean(0).expand_as(tensor[old_vocab:]), atol=1e-6)
        else:
            assert torch.equal(tensor, source_llm.model.state_dict()[name]), name
    assert torch.equal(model.lm_head.weight[:old_vocab], source_llm.lm_head.weight)

    tokenizer = processor.tokenizer
    for field, token in SPECIAL_TOKENS.items():
        token_id = getattr(model.config, field)
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
        assert old_vocab <= token_id < model.config.text_config.vocab_size
    assert model.config.text_config.vocab_size == len(tokenizer)


def test_assembly_needs_both_parts():
    with pytest.raises(SystemExit, match="both --vision and --llm"):
        main(["build", "--vision", "somewhere", "--out", "x"])
