"""Video input (u-LLaVA): `videos=` and `<video>` in the processor, spatio-temporal tokens in the model, batched."""

import numpy as np
import pytest
import torch
from PIL import Image

from visionllm_hf.processing.special_tokens import VIDEO_END, VIDEO_START


def video_prompt(processor, question: str = "What happens in the video?", parts=("video",)) -> str:
    content = [{"type": part} for part in parts] + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def random_video(frames: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 40, 56, 3), dtype=np.uint8)


@pytest.mark.parametrize("num_frames", [8, 3])
def test_a_video_takes_image_seq_length_plus_t_tokens_between_its_markers(tiny, num_frames):
    _, processor = tiny
    inputs = processor(text=[video_prompt(processor)], videos=[random_video()], num_frames=num_frames)
    ids = inputs["input_ids"][0].tolist()
    video_id = processor.video_token_id
    positions = [index for index, token in enumerate(ids) if token == video_id]
    assert len(positions) == processor.image_processor.image_seq_length + num_frames
    assert positions == list(range(positions[0], positions[-1] + 1))  # one run
    tokenizer = processor.tokenizer
    assert ids[positions[0] - 1] == tokenizer.convert_tokens_to_ids(VIDEO_START)
    assert ids[positions[-1] + 1] == tokenizer.convert_tokens_to_ids(VIDEO_END)
    assert inputs["pixel_values_videos"].shape == (1, num_frames, 3, 32, 32)


def test_frames_from_a_file_a_folder_an_array_a_tensor_and_a_list_give_identical_pixel_values(tiny, tmp_path):
    av = pytest.importorskip("av")
    _, processor = tiny
    video = random_video(frames=12)
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(video):
        Image.fromarray(frame).save(folder / f"frame_{index:02d}.png")
    path = tmp_path / "clip.mkv"  # FFV1 is lossless, so the decoded frames are the written ones
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 56, 40, "bgr0"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    forms = {
        "file": str(path),
        "folder": folder,
        "array": video,
        "tensor": torch.from_numpy(video).permute(0, 3, 1, 2),
        "list": [Image.fromarray(frame) for frame in video],
    }
    pixels = {
        name: processor(text=[video_prompt(processor)], videos=[form])["pixel_values_videos"]
        for name, form in forms.items()
    }
    for name, value in pixels.items():
        assert torch.equal(value, pixels["list"]), name
    # sampled uniformly: frames 0 and 11 (first and last) are the first and last of the 8
    first_and_last = processor(text=[video_prompt(processor)], videos=[[Image.fromarray(video[0]), Image.fromarray(video[11])]],
                               num_frames=2)["pixel_values_videos"]
    assert torch.equal(first_and_last[0, 0], pixels["list"][0, 0])
    assert torch.equal(first_and_last[0, 1], pixels["list"][0, -1])


def test_a_video_and_an_image_sample_in_one_batch_answer_as_they_do_alone(either_tiny):
    model, processor = either_tiny
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    prompts = [video_prompt(processor), video_prompt(processor, "Describe the image.", parts=("image",)),
               video_prompt(processor, "And these?", parts=("image", "video"))]
    videos = [random_video(seed=2), random_video(frames=5, seed=3)]
    batch = processor(text=prompts, videos=videos, images=[image, image])
    together = _new_tokens(model, batch, 6)
    alone = [
        _new_tokens(model, processor(text=[prompts[0]], videos=[videos[0]]), 6),
        _new_tokens(model, processor(text=[prompts[1]], images=[image]), 6),
        _new_tokens(model, processor(text=[prompts[2]], videos=[videos[1]], images=[image]), 6),
    ]
    assert together == [row for answer in alone for row in answer]
    with torch.no_grad():  # and the answer reads the video: another video, other next-token logits
        logits = [model(**processor(text=[prompts[0]], videos=[video])).logits[0, -1] for video in (videos[0], videos[1])]
    assert (logits[0] - logits[1]).abs().max() > 1e-4


def test_beam_search_keeps_each_samples_video_with_it(tiny_plain):
    model, processor = tiny_plain
    prompts = [video_prompt(processor), video_prompt(processor, "Which way?")]
    videos = [random_video(seed=4), random_video(seed=5)]
    settings = {"max_new_tokens": 5, "do_sample": False, "num_beams": 3, "num_return_sequences": 2}
    batch = model.generate(**processor(text=prompts, videos=videos), **settings)[:, -5:]
    for row in range(2):
        alone = model.generate(**processor(text=[prompts[row]], videos=[videos[row]]), **settings)[:, -5:]
        assert torch.equal(batch[2 * row : 2 * row + 2], alone)


def test_spatial_tokens_average_over_time_and_temporal_tokens_follow_the_frames(tiny):
    model, processor = tiny
    pixels = processor(text=[video_prompt(processor)], videos=[random_video()])["pixel_values_videos"]
    seq = processor.image_processor.image_seq_length
    with torch.no_grad():
        tokens = model.model.get_video_features(pixels)
        reversed_tokens = model.model.get_video_features(pixels.flip(1))
        features = model.model.get_vision_features(pixels[0])  # (frames, patches, dim), computed on its own
        projector = model.model.multi_modal_projector
        expected_spatial = projector(features.mean(0))
        expected_temporal = projector(features.mean(1))
    assert tokens.shape == (1, seq + 8, model.config.text_config.hidden_size)
    torch.testing.assert_close(tokens[0, :seq], expected_spatial, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tokens[0, seq:], expected_temporal, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reversed_tokens[0, :seq], tokens[0, :seq], rtol=1e-4, atol=1e-5)  # order-free
    torch.testing.assert_close(reversed_tokens[0, seq:], tokens[0, seq:].flip(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "videos, text, message",
    [
        (None, "<video> hi", "no videos were given"),
        ([np.zeros((4, 8, 8, 3), np.uint8)] * 2, "<video> hi", "1 <video> placeholders but 2 videos"),
        (np.zeros((8, 8, 3), np.uint8), "<video> hi", "one image?"),
        ([[]], "<video> hi", "has no frames"),
        (["/no/such/clip"], "<video> hi", "neither a frame folder nor a file"),
        ([3], "<video> hi", "video 0: an image must be"),
        (3, "<video> hi", "a video must be a list of frames"),
    ],
)
def test_bad_videos_are_named(tiny, videos, text, message):
    _, processor = tiny
    with pytest.raises((ValueError, TypeError), match=message):
        processor(text=[text], videos=videos)


def test_an_unreadable_video_file_or_an_empty_frame_folder_is_named(tiny, tmp_path):
    pytest.importorskip("av")
    _, processor = tiny
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="video 0: cannot decode the video file"):
        processor(text=["<video> hi"], videos=[str(broken)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        processor(text=["<video> hi"], videos=[tmp_path / "empty"])


def test_video_tokens_without_frames_and_a_checkpoint_without_video_tokens_are_named(tiny):
    model, processor = tiny
    inputs = processor(text=[video_prompt(processor)], videos=[random_video()])
    with pytest.raises(ValueError, match="no pixel_values_videos were given"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    video_token_id = processor.video_token_id
    processor.video_token_id = None  # as a processor of a checkpoint built before video support
    try:
        with pytest.raises(ValueError, match="no <video> token"):
            processor(text=[video_prompt(processor)], videos=[random_video()])
    finally:
        processor.video_token_id = video_token_id


def test_a_task_prompt_refuses_videos(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="task 'caption' asks about images"):
        processor(images=[np.zeros((8, 8, 3), np.uint8)], task="caption", videos=[random_video()])


def test_training_batches_hold_videos_and_learn_only_the_answers(tiny, tmp_path):
    from visionllm_hf.synthetic.clips import write_clip_dataset
    from visionllm_hf.trainer.collator import VisionLLMCollator
    from visionllm_hf.trainer.data import ConversationSource

    model, processor = tiny
    paths = write_clip_dataset(tmp_path, 2, num_frames=4)
    source = ConversationSource(str(paths["conversations"]), task="video_qa")
    assert source.has_videos
    import random

    samples = [source.sample(index, random.Random(0)) for index in range(len(source))]
    assert all(sample["videos"][0].endswith(("clips/00000", "clips/00001")) for sample in samples)
    batch = VisionLLMCollator(processor)(samples)
    assert batch["pixel_values_videos"].shape[:2] == (6, 8)  # the processor's 8 frames from each 4-frame clip
    labelled = batch["labels"] != -100
    assert not (labelled & (batch["input_ids"] == processor.video_token_id)).any()
    answers = [processor.tokenizer.decode(ids[mask]) for ids, mask in zip(batch["input_ids"], labelled)]
    assert answers[1].strip().removesuffix("</s>").strip() == samples[1]["messages"][1]["content"]
    loss = model(**{k: v for k, v in batch.items() if k != "super_link_targets"}).loss
    assert torch.isfinite(loss)


def _new_tokens(model, inputs, count: int) -> list[list[int]]:
    output = model.generate(**inputs, max_new_tokens=count, do_sample=False)
    sequences = output.sequences if hasattr(output, "sequences") else output
    return sequences[:, inputs["input_ids"].shape[1]:].tolist()


def test_a_seg_answer_about_a_video_gives_a_masklet(tmp_path):
    """
    With a SAM 2 video tracker, the mask `[SEG]` gives on a clip's first frame is tracked through every frame:
    one mask and score per frame, the first frame's following the `[SEG]` mask (SAM 2 outputs its mask prompt on
    the prompted frame), and the masks in the frames' pixels after post-processing.
    """
    from visionllm_hf.builder import build_tiny
    from visionllm_hf.synthetic.clips import make_clip

    model, processor = build_tiny(seed=0, video_masks=True)
    model.eval()
    clips = [make_clip(1, index, num_frames=6) for index in range(2)]
    question = "Segment the moving shape."
    prompts = [video_prompt(processor, question), video_prompt(processor, question)]
    inputs = processor(text=prompts, videos=[clip.frames for clip in clips], num_frames=6)
    answer = processor.answer_token_ids(f"{clips[0].mover().kind} [SEG]")
    inputs["forced_answer_ids"] = torch.tensor([answer, answer])
    outputs = model.generate(**inputs, max_new_tokens=len(answer) + 2)
    for row in range(2):
        (seg,) = [result for result in outputs.results[row] if result["routing"] == "seg"]
        assert seg["video_masks"].shape == (1, 6, 64, 64) and seg["video_scores"].shape == (1, 6)
        assert torch.isfinite(seg["video_masks"]).all() and ((seg["video_scores"] >= 0) & (seg["video_scores"] <= 1)).all()
        first = torch.nn.functional.interpolate(seg["masks"][None].float(), size=(64, 64), mode="bilinear")[0, 0] > 0.5
        tracked = seg["video_masks"][0, 0] > 0.5
        # SAM 2 reads its mask prompt through a 16 x 16 grid (a quarter of its 64 px input), which blurs this
        # untrained SAM's speckled mask: the tracked first frame is that mask averaged over 4 x 4 pixel cells
        cells = torch.nn.functional.avg_pool2d(first[None, None].float(), 4)
        smoothed = torch.nn.functional.interpolate(cells, size=(64, 64), mode="bilinear")[0, 0] > 0.5
        assert (smoothed == tracked).float().mean() >= 0.7  # 0.87 and 0.76 here; unrelated masks agree on ~0.5
    without = model.generate(**inputs, max_new_tokens=len(answer) + 2, video_mask=False)
    assert all("video_masks" not in result for result in without.results[0])
    (obj,) = [o for o in processor.post_process_generation(outputs, target_sizes=[(128, 128)] * 2)[0]["objects"]
              if o["routing"] == "[SEG]"]
    assert obj["video_masks"].shape == (6, 128, 128) and obj["video_masks"].dtype == bool
    assert len(obj["video_scores"]) == 6


def test_frame_change_tokens_carry_each_step_and_flip_with_the_order(tiny):
    """
    `video_temporal_tokens="frame_changes"`: the spatial tokens stay u-LLaVA's; temporal token t is the projected,
    standardised change of frame t's average since frame t-1. A steady change gives equal tokens, the reversed
    video gives the opposite changes, and a still video gives T copies of the projected zero vector.
    """
    from visionllm_hf.modeling.modeling_visionllm import frame_changes

    model, processor = tiny
    pixels = processor(text=[video_prompt(processor)], videos=[random_video()])["pixel_values_videos"]
    seq = processor.image_processor.image_seq_length
    projector = model.model.multi_modal_projector
    with torch.no_grad():
        means_tokens = model.model.get_video_features(pixels)
        model.config.video_temporal_tokens = "frame_changes"
        try:
            tokens = model.model.get_video_features(pixels)
            still = model.model.get_video_features(pixels[:, :1].expand_as(pixels))
        finally:
            model.config.video_temporal_tokens = "frame_means"
        frame_means = model.model.get_vision_features(pixels[0]).mean(1)  # (frames, dim)
        steps = frame_means[1:] - frame_means[:-1]
        expected = projector(torch.cat([torch.zeros_like(steps[:1]), (steps - steps.mean(-1, keepdim=True))
                                        / steps.var(-1, unbiased=False, keepdim=True).add(1e-5).sqrt()]))
        zero = projector(torch.zeros_like(frame_means[0]))
    torch.testing.assert_close(tokens[0, :seq], means_tokens[0, :seq])  # the spatial tokens are unchanged
    torch.testing.assert_close(tokens[0, seq:], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(tokens[0, seq:], means_tokens[0, seq:], atol=1e-3)
    torch.testing.assert_close(still[0, seq:], zero.expand(8, -1), rtol=1e-4, atol=1e-5)
    ramp = torch.randn(1, 1, 5) + torch.arange(4.0).view(1, 4, 1) * torch.randn(1, 1, 5)  # a steady change
    changes = frame_changes(ramp)
    torch.testing.assert_close(changes[0, 1:], changes[0, 1:2].expand(3, -1))
    torch.testing.assert_close(frame_changes(ramp.flip(1))[0, 1:], -changes[0, 1:])
    assert changes[0, 1].pow(2).mean().item() == pytest.approx(1.0, abs=1e-3)  # standardised: as loud as a frame


def test_an_unknown_temporal_token_kind_is_named(tiny):
    model, _ = tiny
    # transformers' strict config fields (or, where they do not check, the config itself) name field and value
    with pytest.raises((ValueError, TypeError, __import__("huggingface_hub").errors.StrictDataclassError),
                       match="video_temporal_tokens.*frame_diffs"):
        type(model.config)(**{**model.config.to_dict(), "video_temporal_tokens": "frame_diffs"})


def test_train_gives_a_checkpoint_without_video_tokens_its_video_tokens(tmp_path):
    """The shipped demo model predates video support: `visionllm-hf train` on video data adds the three tokens."""
    import json

    from safetensors.torch import load_file

    from visionllm_hf.cli import main
    from visionllm_hf.demo import DEMO_MODEL
    from visionllm_hf.synthetic.clips import write_clip_dataset

    demo = json.loads((DEMO_MODEL / "config.json").read_text())
    assert demo.get("video_token_id") is None
    paths = write_clip_dataset(tmp_path / "clips", 2, num_frames=3)
    out = tmp_path / "tuned"
    assert main(["train", "--model", str(DEMO_MODEL), "--stage", "v2-tune", "--data",
                 f"conversation={paths['conversations']}", "--output_dir", str(out), "--max_steps", "1",
                 "--per_device_train_batch_size", "2", "--save_strategy", "no", "--learning_rate_scale", "0",
                 "--video_temporal_tokens", "frame_changes"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert demo.get("video_temporal_tokens", "frame_means") == "frame_means"
    assert config["video_temporal_tokens"] == "frame_changes"  # asked for, and saved
    vocabulary = demo["text_config"]["vocab_size"]
    assert [config[f"video{part}_token_id"] for part in ("", "_start", "_end")] == [vocabulary, vocabulary + 1, vocabulary + 2]
    assert config["text_config"]["vocab_size"] == vocabulary + 3
    old, new = load_file(DEMO_MODEL / "model.safetensors"), load_file(out / "model.safetensors")
    name = "model.language_model.embed_tokens.weight"
    assert torch.equal(new[name][:vocabulary], old[name])  # the old rows kept (learning rates scaled to 0)
    processor = __import__("transformers").AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert processor.tokenizer.encode("<video>", add_special_tokens=False) == [vocabulary]
