import pytest
import torch

from visionllm_hf.processing import SPECIAL_TOKENS, VisionLLMProcessor

from .helpers import random_image


def test_each_image_placeholder_expands_to_its_tile_tokens(tiny):
    _, processor = tiny
    wide, square = random_image(40, 160), random_image(50, 50)
    out = processor(images=[wide, square], text=["a <image> b", "<image> c"])
    image_id = processor.image_token_id
    tokens_per_tile = processor.image_processor.image_seq_length
    tiles = [columns * rows + 1 for columns, rows in out["image_grids"].tolist()]
    counts = (out["input_ids"] == image_id).sum(dim=1).tolist()
    assert counts == [tiles[0] * tokens_per_tile, tiles[1] * tokens_per_tile]
    assert out["pixel_values"].shape[0] == sum(tiles)


def test_several_images_per_sample_nested_or_flat_give_the_same_batch(tiny):
    _, processor = tiny
    images = [random_image(30, 90, seed=1), random_image(90, 30, seed=2), random_image(40, 40, seed=3)]
    texts = ["first <image> then <image>", "only <image>"]
    nested = processor(images=[images[:2], images[2:]], text=texts)
    flat = processor(images=images, text=texts)
    for key in ("input_ids", "pixel_values", "image_grids"):
        torch.testing.assert_close(nested[key], flat[key])


def test_placeholder_and_image_count_mismatch_names_both_counts(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="2 <image> placeholders but 1 images"):
        processor(images=[random_image(8, 8)], text=["<image> and <image>"])
    with pytest.raises(ValueError, match="sample 1 has 1 <image> placeholders but 2 images"):
        processor(images=[[random_image(8, 8)], [random_image(8, 8), random_image(8, 8)]], text=["<image>", "<image>"])
    with pytest.raises(ValueError, match="1 <image> placeholders but no images"):
        processor(text=["<image> where is it"])
    with pytest.raises(ValueError, match="0 <image> placeholders but 1 images"):
        processor(images=[random_image(8, 8)], text=["no placeholder"])


def test_truncation_into_image_tokens_is_an_error(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="image tokens"):
        processor(images=[random_image(8, 8)], text=["<image> hi"], truncation=True, max_length=10)


def test_padding_is_on_the_left_for_generation(tiny):
    _, processor = tiny
    out = processor(text=["short", "a much longer prompt than the other one"])
    assert out["attention_mask"][0, 0] == 0 and out["attention_mask"][0, -1] == 1
    assert out["input_ids"][0, 0] == processor.tokenizer.pad_token_id


def test_chat_template_renders_images_and_turns(tiny):
    _, processor = tiny
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.endswith(" USER: <image>\nWhat is it? ASSISTANT: A cat.</s>USER: Sure? ASSISTANT:")
    assert prompt.count("<image>") == 1


def test_special_tokens_stay_single_ids_after_save_and_reload(tiny, tmp_path):
    _, processor = tiny
    processor.save_pretrained(tmp_path)
    reloaded = VisionLLMProcessor.from_pretrained(tmp_path)
    for token in SPECIAL_TOKENS.values():
        ids = reloaded.tokenizer.encode(f"x {token}y", add_special_tokens=False)
        assert ids.count(processor.tokenizer.convert_tokens_to_ids(token)) == 1
        assert reloaded.tokenizer.convert_tokens_to_ids(token) == processor.tokenizer.convert_tokens_to_ids(token)
    assert reloaded.chat_template == processor.chat_template


def test_decoding_round_trips_text(tiny):
    _, processor = tiny
    text = "There are two red circles."
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert processor.batch_decode([ids])[0] == text
    assert processor.post_process_image_text_to_text(torch.tensor([ids])) == [text]
