"""Bad input gets a clear error in the user's terms (or a warning when valid but risky), never a silent wrong answer.

Every case asserts the error type and that the message names the problem; the error is raised by our code, not
from deep inside torch, tokenizers or safetensors. Then inputs that are odd but valid (1x1, 4096 px, CMYK, RGBA,
16-bit, batches of mixed tasks) give the same answers as their clean equivalents. Bad training data is in
`test_bad_data.py`.
"""

import os
import traceback
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from visionllm_hf.builder import build_tiny, save_checkpoint
from visionllm_hf.evaluation.forcing import forced_generation_kwargs, training_answer_ids
from visionllm_hf.trainer.collator import VisionLLMCollator

from .helpers import ScriptedTokens, random_image

GOOD = random_image(40, 40, seed=7)


def expect(error: type, match: str, call, *args, raised_by_us: bool = True, **kwargs):
    """
    `call` raises `error` whose message contains `match`, and the raising frame is in our package (unless
    `raised_by_us=False`: transformers' own argument validation, whose message names the mistake).
    """
    with pytest.raises(error, match=match) as info:
        call(*args, **kwargs)
    last = traceback.extract_tb(info.tb)[-1].filename
    assert not raised_by_us or "visionllm_hf" in last or "transformers_modules" in last, f"raised from {last}"


def nan_tensor():
    image = torch.rand(3, 20, 20)
    image[1, 5, 5] = float("nan")
    return image


def inf_array():
    image = np.random.default_rng(0).random((20, 20, 3))
    image[0, 0, 0] = np.inf
    return image


def corrupt_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return path


IMAGE_CASES = {
    "nan pixel (torch float)": (lambda tmp: nan_tensor(), ValueError, "non-finite"),
    "inf pixel (numpy float)": (lambda tmp: inf_array(), ValueError, "non-finite"),
    "float image in 0..255": (lambda tmp: torch.rand(3, 20, 20) * 255, ValueError, r"\[0, 1\].*uint8 or divided by 255"),
    "negative floats": (lambda tmp: torch.rand(3, 20, 20) - 2, ValueError, r"\[0, 1\]"),
    "bool array": (lambda tmp: np.ones((20, 20), dtype=bool), TypeError, "bool"),
    "int64 values above 255": (lambda tmp: np.full((20, 20, 3), 300), ValueError, "0..255"),
    "PIL mode La": (lambda tmp: Image.new("La", (20, 20)), ValueError, "mode La"),
    "PIL 32-bit with negatives": (lambda tmp: Image.fromarray(np.full((8, 8), -5, dtype=np.int32), mode="I"), ValueError, "0..65535"),
    "PIL float above 1": (lambda tmp: Image.fromarray(np.full((8, 8), 3.5, dtype=np.float32), mode="F"), ValueError, r"\[0, 1\]"),
    "4-D array": (lambda tmp: np.zeros((2, 8, 8, 3), dtype=np.uint8), ValueError, "HWC"),
    "5 channels": (lambda tmp: np.zeros((8, 8, 5), dtype=np.uint8), ValueError, "channels"),
    "zero pixels": (lambda tmp: np.zeros((0, 8, 3), dtype=np.uint8), ValueError, "zero pixels"),
    "too many pixels": (lambda tmp: np.zeros((9000, 9000), dtype=np.uint8), ValueError, "too large"),
    "corrupt file": (corrupt_file, ValueError, "corrupt or not an image"),
    "missing file": (lambda tmp: tmp / "nowhere.png", ValueError, "not found"),
    "a folder": (lambda tmp: tmp, ValueError, "folder"),
    "not an image object": (lambda tmp: {"pixels": 1}, TypeError, "file path, PIL.Image"),
}


@pytest.mark.parametrize("case", IMAGE_CASES, ids=list(IMAGE_CASES))
def test_bad_images(case, tiny, tmp_path):
    _, processor = tiny
    make, error, match = IMAGE_CASES[case]
    expect(error, match, processor, images=[make(tmp_path)], text=["<image> what?"])


TEXT_CASES = {
    "empty text list": (dict(images=None, text=[]), ValueError, "empty list"),
    "text not a string": (dict(images=None, text=42), TypeError, "string or a list of strings"),
    "stray <query>": (dict(images=[GOOD], text=["<image> what is <query> here?"]), ValueError, "<query>.*reserved"),
    "more images than placeholders": (dict(images=[GOOD, GOOD], text=["<image> what?"]), ValueError, "placeholders"),
    "image option that tiling cannot honour": (dict(images=[GOOD], text=["<image> a"], crop_size={"height": 8, "width": 8}), ValueError, "crop_size"),
    "min_tiles above max_tiles": (dict(images=[GOOD], text=["<image> a"], min_tiles=3, max_tiles=2), ValueError, "min_tiles <= max_tiles"),
}


@pytest.mark.parametrize("case", TEXT_CASES, ids=list(TEXT_CASES))
def test_bad_text_and_options(case, tiny):
    _, processor = tiny
    kwargs, error, match = TEXT_CASES[case]
    expect(error, match, processor, **kwargs)


def test_typed_routing_token_in_a_user_turn_is_refused(tiny):
    _, processor = tiny
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "find the cars [DET]"}]}]
    expect(ValueError, r"types \['\[DET\]'\]", processor.apply_chat_template, messages, add_generation_prompt=True)


REGION_CASES = {
    "NaN box coordinate": ([{"box": [float("nan"), 2, 10, 10]}], ValueError, "non-finite"),
    "box outside the image": ([{"box": [2, 2, 90, 10]}], ValueError, "outside the 40x40 image"),
    "box with x2 < x1": ([{"box": [20, 2, 10, 10]}], ValueError, "x2 > x1"),
    "empty mask": ([{"mask": np.zeros((40, 40), dtype=bool)}], ValueError, "empty"),
    "mask of another size": ([{"mask": np.ones((10, 10), dtype=bool)}], ValueError, "height x width"),
    "two kinds in one region": ([{"box": [1, 1, 5, 5], "point": [2, 2]}], ValueError, "exactly one of"),
    "point with one number": ([{"point": [3]}], ValueError, "needs 2 numbers"),
    "two regions for one placeholder": ([{"point": [3, 3]}, {"point": [5, 5]}], ValueError, "1 <region> placeholders but 2"),
}


@pytest.mark.parametrize("case", REGION_CASES, ids=list(REGION_CASES))
def test_bad_regions(case, tiny):
    _, processor = tiny
    regions, error, match = REGION_CASES[case]
    expect(error, match, processor, images=[GOOD], text=["<image> what is <region>?"], regions=[regions])


def right_padded(processor):
    return processor(images=[GOOD, GOOD], text=["<image> a", "<image> a longer question"], padding_side="right")


GENERATE_CASES = {
    "right-padded batch (plain)": ("tiny_plain", {}, ValueError, "padded on the right"),
    "right-padded batch (decoders)": ("tiny", {}, ValueError, "padded on the right"),
    "negative max_new_tokens (decoders)": ("tiny", {"max_new_tokens": -1}, ValueError, "max_new_tokens.*-1"),
    "beam search with decoders": ("tiny", {"num_beams": 2}, ValueError, "num_beams"),
}


@pytest.mark.parametrize("case", GENERATE_CASES, ids=list(GENERATE_CASES))
def test_bad_generate_calls(case, request):
    fixture, kwargs, error, match = GENERATE_CASES[case]
    model, processor = request.getfixturevalue(fixture)
    inputs = right_padded(processor) if "right" in case else processor(images=[GOOD], text=["<image> a"])
    expect(error, match, model.generate, **inputs, **kwargs, raised_by_us="max_new_tokens" not in kwargs)


def generated(tiny):
    model, processor = tiny
    inputs = processor(images=[GOOD], text=["<image> find it"])
    forced = ScriptedTokens([processor.tokenizer.encode("a [DET]", add_special_tokens=False)], processor.tokenizer.eos_token_id)
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=4, logits_processor=[forced])


POST_PROCESSING_CASES = {
    "zero target size": ([(0, 40)], ValueError, "positive whole pixels"),
    "negative target size": ([(40, -3)], ValueError, "positive whole pixels"),
    "target size not a pair": ([40], ValueError, r"\(height, width\)"),
    "wrong number of target sizes": ([(40, 40), (40, 40)], ValueError, "2 entries for 1 samples"),
}


@pytest.mark.parametrize("case", POST_PROCESSING_CASES, ids=list(POST_PROCESSING_CASES))
def test_bad_post_processing(case, tiny):
    sizes, error, match = POST_PROCESSING_CASES[case]
    expect(error, match, tiny[1].post_process_generation, generated(tiny), target_sizes=sizes)


def test_post_processing_token_ids_names_the_right_call(tiny):
    expect(TypeError, "VisionLLMGenerateOutput", tiny[1].post_process_generation, generated(tiny).sequences)


def test_truncated_weights_name_the_file(tmp_path):
    from transformers import AutoModel

    model, processor = build_tiny(seed=0, decoders=False)
    save_checkpoint(model, processor, tmp_path)
    weights = tmp_path / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(os.path.getsize(weights) // 2)
    for trust_remote_code in (False, True):
        expect(OSError, "model.safetensors.*truncated or corrupt", AutoModel.from_pretrained, tmp_path,
               trust_remote_code=trust_remote_code)


# --- valid but risky: warnings ------------------------------------------------------------------------


def test_prompts_longer_than_the_model_positions_warn(tiny_plain):
    model, processor = tiny_plain
    long_text = "<image> " + "word " * (model.config.max_text_positions() + 10)
    with pytest.warns(UserWarning, match="positions the model was trained for"):
        inputs = processor(images=[GOOD], text=[long_text])
    with pytest.warns(UserWarning, match="positions the language model was trained for"), torch.no_grad():
        model(**inputs)
    short = processor(images=[GOOD], text=["<image> hi"])
    with pytest.warns(UserWarning, match="prompt plus max_new_tokens"), torch.no_grad():
        model.generate(**short, max_new_tokens=model.config.max_text_positions())


def test_routing_token_in_a_text_only_answer_warns_and_gives_no_objects(tiny):
    model, processor = tiny
    inputs = processor(images=[GOOD], text=["hello there", "<image> find it"])
    answers = [processor.tokenizer.encode(a, add_special_tokens=False) for a in ("a [DET]", "b [DET]")]
    forced = ScriptedTokens(answers, processor.tokenizer.eos_token_id)
    with pytest.warns(UserWarning, match="sample 0's answer holds 'det' routing, but the sample has no image"):
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, logits_processor=[forced])
    processed = processor.post_process_generation(out)
    assert processed[0]["objects"] == [] and len(processed[1]["objects"]) > 0


# --- forcing uses the training tokenisation -------------------------------------------------------------


@pytest.mark.parametrize("answer", ["circle [DET], square [DET].", "the small red circle [DET].", "[SEG].",
                                    "the ball <LOC>."])
def test_forced_answer_ids_are_the_ids_training_labels(tiny, answer):
    _, processor = tiny
    sample = {"messages": [{"role": "user", "content": "<image>\nWhat?"}, {"role": "assistant", "content": answer}],
              "images": [GOOD]}
    collator = VisionLLMCollator(processor)
    batch = collator([sample])
    labels = batch["labels"][0]
    trained = [i for i in labels[labels != -100].tolist()][:-1]  # without the closing end-of-sequence token
    assert training_answer_ids(processor, answer) == trained
    forced = forced_generation_kwargs(processor, [answer])["logits_processor"][0].answers[0]
    assert forced == trained and processor.tokenizer.decode(forced).strip() == answer


# --- odd but valid inputs give the clean answer -----------------------------------------------------------


def logits_of(tiny, image):
    model, processor = tiny
    with torch.no_grad():
        return model(**processor(images=[image], text=["<image> what colour?"])).logits[:, -1]


def test_constant_images_of_any_size_read_the_same(tiny):
    colour = np.array([200, 40, 90], dtype=np.uint8)
    reference = logits_of(tiny, np.broadcast_to(colour, (32, 32, 3)).copy())
    for height, width in ((1, 1), (1, 4096), (4096, 4096)):
        image = np.broadcast_to(colour, (height, width, 3)).copy()
        grids = tiny[1](images=[image], text=["<image> a"])["image_grids"]
        if grids.tolist() == [[1, 1]]:  # same tiling: the same numbers
            torch.testing.assert_close(logits_of(tiny, image), reference, atol=1e-5, rtol=0)


def test_colour_modes_read_as_their_rgb(tiny):
    rgb = Image.fromarray(random_image(48, 64, seed=3))
    grey = Image.fromarray(random_image(48, 64, seed=4)[..., 0])
    pairs = [
        (rgb.convert("CMYK"), rgb.convert("CMYK").convert("RGB")),
        (rgb.convert("RGBA"), rgb),
        (rgb.convert("P"), rgb.convert("P").convert("RGB")),
        (Image.fromarray(np.asarray(grey).astype(np.uint16) * 257), grey),  # 16-bit: v * 257 / 65535 == v / 255
        (np.asarray(grey).astype(np.uint16) * 257, grey),
        (Image.fromarray((np.asarray(grey) / 255).astype(np.float32), mode="F"), grey),
    ]
    for odd, clean in pairs:
        torch.testing.assert_close(logits_of(tiny, odd), logits_of(tiny, clean), atol=1e-4, rtol=0)


def test_a_batch_of_eight_mixed_tasks_answers_as_each_alone(tiny):
    model, processor = tiny
    images = [random_image(30 + 7 * k, 60 - 4 * k, seed=k) for k in range(8)]
    rows = [
        ("<image> Describe it.", [images[0]], None, "two shapes"),
        ("<image> Find them.", [images[1]], None, "a [DET], b [DET]"),
        ("<image> What is <region>?", [images[2]], [[{"box": [1, 1, 20, 20]}]], "a circle"),
        ("<image> Segment <region>.", [images[3]], [[{"point": [5, 5]}]], "[SEG]"),
        ("Just text, no picture.", [], None, "hello"),
        ("<image> Where is the ball?", [images[5]], None, "the ball <LOC>"),
        ("<image> <image> Compare them.", [images[6], images[7]], None, "the same"),
        ("<image> Pose?", [images[4]], None, "a [POSE]"),
    ]
    eos = processor.tokenizer.eos_token_id

    def run(selected):
        texts = [rows[i][0] for i in selected]
        sample_images = [rows[i][1] for i in selected]
        regions = [rows[i][2] or [[] for _ in rows[i][1]] for i in selected]
        scripts = [processor.tokenizer.encode(rows[i][3], add_special_tokens=False) for i in selected]
        inputs = processor(images=sample_images if any(sample_images) else None, text=texts,
                           regions=regions if any(rows[i][2] for i in selected) else None)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model.generate(**inputs, max_new_tokens=12, logits_processor=[ScriptedTokens(scripts, eos)])
        return processor.post_process_generation(out)

    batched = run(list(range(8)))
    for index in range(8):
        alone = run([index])[0]
        assert batched[index]["text"] == alone["text"]
        assert len(batched[index]["objects"]) == len(alone["objects"])
        for ours, theirs in zip(batched[index]["objects"], alone["objects"]):
            assert abs(ours["score"] - theirs["score"]) < 1e-4
