"""Stage 0 (`visionllm-hf pretrain clip|llm`) and assembling its parts with `build --preset demo --vision --llm`."""

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, CLIPImageProcessor, CLIPModel, LlamaForCausalLM

from visionllm_hf.cli import main
from visionllm_hf.synthetic.export import write_dataset
from visionllm_hf.trainer.pretrain import (
    CAPTION_END,
    ImageTexts,
    _collate_image_texts,
    caption_pairs,
    clip_records,
    read_texts,
    region_embeddings,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("scenes"), num_images=8, seed=0)


@pytest.fixture(scope="module")
def parts(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    assert main(["pretrain", "clip", "--captions", str(data["captions"]), "--instances", str(data["instances"]),
                 "--images", str(data["images"]), "--out", str(root / "clip"), "--steps", "80", "--batch-size", "8",
                 "--learning-rate", "2e-3"]) == 0
    assert main(["pretrain", "llm", "--text", str(data["conversations"]), str(data["captions"]), str(data["referring"]),
                 "--out", str(root / "llm"), "--steps", "40", "--batch-size", "16"]) == 0
    return root


def retrieval_accuracy(clip: CLIPModel, folder, data) -> float:
    """How often each training image's most similar caption (of the 8) is its own."""
    pairs = caption_pairs(data["captions"], data["images"])
    processor, tokenizer = CLIPImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    from PIL import Image

    pixels = processor([Image.open(path).convert("RGB") for path, _ in pairs], return_tensors="pt")["pixel_values"]
    text = tokenizer([caption + CAPTION_END for _, caption in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = clip(pixel_values=pixels, **text).logits_per_image
    return (logits.argmax(-1) == torch.arange(len(pairs))).float().mean().item()


def test_pretrained_clip_matches_images_to_their_captions(parts, data):
    trained = CLIPModel.from_pretrained(parts / "clip")
    untrained = CLIPModel(trained.config)
    assert retrieval_accuracy(trained, parts / "clip", data) >= 0.75  # chance: 1 in 8
    assert retrieval_accuracy(untrained, parts / "clip", data) <= 0.5


def region_accuracy(clip: CLIPModel, folder, data) -> tuple[float, float]:
    """How often a region's embedding (patches of layer -2 over its mask) is nearest its own text; and chance."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "right"
    records = clip_records(data["images"], instances=data["instances"])
    dataset = ImageTexts(records, CLIPImageProcessor.from_pretrained(folder), grid=8)
    batch = _collate_image_texts(tokenizer)([dataset[index] for index in range(len(dataset))])
    with torch.no_grad():
        patches = clip.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True).hidden_states[-2]
        regions = region_embeddings(clip, patches[:, 1:][batch["region_image"]], batch["region_weights"])
        texts = clip.text_projection(clip.text_model(**batch["region_texts"]).pooler_output)
    nearest = (regions @ torch.nn.functional.normalize(texts, dim=-1).T).argmax(-1)
    return (nearest == batch["region_labels"]).float().mean().item(), 1 / len(texts)


def test_pretrained_clip_patch_features_name_the_regions(parts, data):
    trained = CLIPModel.from_pretrained(parts / "clip")
    accuracy, chance = region_accuracy(trained, parts / "clip", data)
    untrained_accuracy, _ = region_accuracy(CLIPModel(trained.config), parts / "clip", data)
    assert accuracy >= 0.6 and accuracy > 4 * chance  # about 20 different region texts in 8 scenes
    assert untrained_accuracy < accuracy - 0.3


def test_pretrained_llm_predicts_the_data_text(parts, data):
    trained = LlamaForCausalLM.from_pretrained(parts / "llm").eval()
    untrained = LlamaForCausalLM(trained.config).eval()
    tokenizer = AutoTokenizer.from_pretrained(parts / "llm")
    texts = read_texts(data["conversations"])[:16]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        trained_loss = trained(**batch, labels=labels).loss.item()
        untrained_loss = untrained(**batch, labels=labels).loss.item()
    assert trained_loss < 0.5 * untrained_loss  # untrained: about ln(vocabulary)


def test_demo_assembly_keeps_both_parts_and_starts_image_tokens_at_the_text_scale(parts, tmp_path):
    out = tmp_path / "assembled"
    assert main(["build", "--preset", "demo", "--vision", str(parts / "clip"), "--llm", str(parts / "llm"),
                 "--out", str(out)]) == 0
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    clip = CLIPModel.from_pretrained(parts / "clip")
    for name, tensor in model.model.vision_tower.state_dict().items():
        assert torch.equal(tensor, clip.vision_model.state_dict()[name]), name
    assert sorted(model.config.routing_decoders) == ["det", "loc", "pose", "seg"]
    assert model.config.training_history == ["pretrained-parts"]  # `train` continues with v2-pretrain
    embeddings = model.get_input_embeddings().weight
    projector = model.model.multi_modal_projector
    tokens = projector(torch.randn(64, model.config.vision_feature_dim) * 5)
    regions = model.model.region_encoder.projector(torch.randn(8, model.config.vision_feature_dim) * 5)
    for projected in (tokens, regions):  # the text-embedding scale, whatever the tower's
        ratio = projected.norm(dim=-1).mean() / embeddings.norm(dim=-1).mean()
        assert 0.5 < ratio.item() < 2.0


def test_read_texts_reads_every_format(data, tmp_path):
    conversations = read_texts(data["conversations"])
    assert conversations[0].startswith("USER: Describe the image briefly. ASSISTANT: There")
    assert "<image>" not in " ".join(conversations)
    captions = read_texts(data["captions"])
    assert len(captions) == 8
    records = [json.loads(line) for line in data["referring"].read_text().splitlines()]
    assert read_texts(data["referring"]) == [r[f] for r in records for f in ("expression", "region_caption")]
    lines = tmp_path / "lines.txt"
    lines.write_text("one\n\ntwo\n")
    assert read_texts(lines) == ["one", "two"]


def test_bad_pretraining_data_is_named(data, tmp_path):
    with pytest.raises(ValueError, match="not a COCO captions file"):
        caption_pairs(data["conversations"], data["images"])
    with pytest.raises(ValueError, match="images of .* are not in"):
        caption_pairs(data["captions"], tmp_path)
    with pytest.raises(ValueError, match="needs a COCO captions file, a COCO instances file"):
        clip_records(data["images"])
    with pytest.raises(SystemExit, match="needs --images DIR and --captions"):
        main(["pretrain", "clip", "--out", str(tmp_path / "x")])


def test_region_texts_can_say_where_the_region_is():
    from visionllm_hf.trainer.pretrain import region_text

    image = {"width": 90, "height": 60}
    attributes = {"attributes": {"size": "small", "colour": "red"}}
    assert region_text({"bbox": [0, 0, 20, 10], **attributes}, "circle") == "a small red circle"
    assert region_text({"bbox": [0, 0, 20, 10], **attributes}, "circle", image) == "a small red circle at the top left"
    assert region_text({"bbox": [35, 25, 20, 10]}, "square", image) == "a square at the middle centre"
    assert region_text({"bbox": [80, 50, 10, 10]}, "square", image) == "a square at the bottom right"  # edge: last third
