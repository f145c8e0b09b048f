"""`propagate_masklet` on a tiny random `Sam2VideoModel`, and the shipped file's import constraint."""

import ast
import math
from pathlib import Path

import pytest
import torch
from transformers import Sam2VideoConfig, Sam2VideoModel, Sam2VideoVideoProcessor

from visionllm_hf.builder.presets import tiny_sam2_video_config
from visionllm_hf.modeling import video_masklets
from visionllm_hf.modeling.video_masklets import propagate_masklet

NUM_FRAMES, HEIGHT, WIDTH = 5, 48, 64


def _model(seed: int = 0, initializer_range: float | None = None) -> Sam2VideoModel:
    config = tiny_sam2_video_config()
    if initializer_range is not None:
        # at the default 0.02 every tracked frame's logits are ~0 (probabilities ~0.5), so prompts barely matter
        for sub_config in (config, config.vision_config, config.vision_config.backbone_config):
            sub_config.initializer_range = initializer_range
    torch.manual_seed(seed)
    return Sam2VideoModel(config).eval()


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def frames():
    return torch.rand(NUM_FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))


def _box_mask(top, bottom, left, right, height=HEIGHT, width=WIDTH):
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a & b).sum() / (a | b).sum()).item()


def test_shapes_and_ranges(model, frames):
    masks, scores = propagate_masklet(model, frames, _box_mask(10, 40, 8, 40))
    assert masks.shape == (NUM_FRAMES, HEIGHT, WIDTH) and scores.shape == (NUM_FRAMES,)
    assert masks.dtype == scores.dtype == torch.float32
    assert not masks.requires_grad and not scores.requires_grad
    assert torch.isfinite(masks).all() and torch.isfinite(scores).all()
    assert masks.min() >= 0 and masks.max() <= 1 and scores.min() >= 0 and scores.max() <= 1


@pytest.mark.parametrize("frame_index", [0, 3])
def test_prompted_frame_is_the_prompt_mask(model, frames, frame_index):
    # SAM2 turns a mask prompt straight into the output (`_use_mask_as_output`), whatever the weights
    box = _box_mask(10, 40, 8, 40)
    masks, scores = propagate_masklet(model, frames, box, frame_index)
    assert _iou(masks[frame_index] > 0.5, box) >= 0.9
    assert scores[frame_index].item() == pytest.approx(1 / (1 + math.exp(-10)))
    other_masks, other_scores = propagate_masklet(_model(seed=1), frames, box, frame_index)
    torch.testing.assert_close(other_masks[frame_index], masks[frame_index])
    # float probabilities are binarised at 0.5; a mask at another resolution is resized
    soft = torch.where(box, 0.7, 0.2)
    torch.testing.assert_close(propagate_masklet(model, frames, soft, frame_index)[0][frame_index], masks[frame_index])
    large = _box_mask(20, 80, 16, 80, height=2 * HEIGHT, width=2 * WIDTH)
    assert _iou(propagate_masklet(model, frames, large, frame_index)[0][frame_index] > 0.5, box) >= 0.9
    # an empty prompt says the object is absent there
    empty_masks, empty_scores = propagate_masklet(model, frames, torch.zeros(HEIGHT, WIDTH), frame_index)
    assert empty_masks[frame_index].max() < 1e-3 and empty_scores[frame_index] < 1e-3


def test_prompt_mask_conditions_the_other_frames(frames):
    model = _model(initializer_range=0.2)
    masks_a, scores_a = propagate_masklet(model, frames, _box_mask(10, 40, 8, 40), 1)
    masks_b, scores_b = propagate_masklet(model, frames, _box_mask(2, 20, 30, 60), 1)
    others = [0, 2, 3, 4]
    assert (masks_a[others] - masks_b[others]).abs().max() > 0.05 or (scores_a - scores_b)[others].abs().max() > 0.01
    again_a, _ = propagate_masklet(model, frames, _box_mask(10, 40, 8, 40), 1)
    torch.testing.assert_close(again_a, masks_a)  # and it is deterministic


@pytest.mark.parametrize("frame_index", [0, 2, NUM_FRAMES - 1])
def test_propagates_forward_then_backward(model, frames, frame_index, monkeypatch):
    calls = []
    forward = model.forward

    def spy(*args, **kwargs):
        calls.append((kwargs["frame_idx"], kwargs["reverse"]))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    masks, scores = propagate_masklet(model, frames, _box_mask(10, 40, 8, 40), frame_index)
    expected = [(i, False) for i in range(frame_index, NUM_FRAMES)]
    if frame_index > 0:
        expected += [(i, True) for i in range(frame_index, -1, -1)]
    assert calls == expected
    # frames start as NaN inside `propagate_masklet`: every frame was written, with a non-zero score
    assert torch.isfinite(masks).all() and torch.isfinite(scores).all() and (scores > 0).all()


def test_matches_the_sam2_video_processor(frames, monkeypatch):
    """Pixels as `Sam2VideoVideoProcessor` makes them; masks as its `post_process_masks` (before the threshold)."""
    model = _model(initializer_range=0.2)
    videos, outputs = [], {}

    class Session(video_masklets.Sam2VideoInferenceSession):
        def __init__(self, video, **kwargs):
            videos.append(video)
            super().__init__(video, **kwargs)

    forward = model.forward

    def spy(*args, **kwargs):
        output = forward(*args, **kwargs)
        outputs[output.frame_idx] = output.pred_masks
        return output

    monkeypatch.setattr(video_masklets, "Sam2VideoInferenceSession", Session)
    monkeypatch.setattr(model, "forward", spy)
    masks, _ = propagate_masklet(model, frames, _box_mask(10, 40, 8, 40), 2)
    processor = Sam2VideoVideoProcessor()
    size = {"height": 64, "width": 64}
    expected = processor(videos=frames, size=size, do_rescale=False, return_tensors="pt").pixel_values_videos[0]
    torch.testing.assert_close(videos[0], expected)
    assert sorted(outputs) == list(range(NUM_FRAMES))
    for index, pred_masks in outputs.items():
        logits = processor.post_process_masks(
            [pred_masks], [[HEIGHT, WIDTH]], [[64, 64]], binarize=False, pad_size=size
        )
        torch.testing.assert_close(masks[index], logits[0][0, 0].sigmoid())


def test_runs_in_the_models_dtype(frames):
    model = _model().to(torch.bfloat16)
    masks, scores = propagate_masklet(model, frames, _box_mask(10, 40, 8, 40), 2)
    assert masks.dtype == torch.float32 and torch.isfinite(masks).all() and torch.isfinite(scores).all()
    assert model.training is False


def test_tiny_config_round_trip_and_size():
    config = tiny_sam2_video_config()
    as_dict = config.to_dict()
    again = Sam2VideoConfig(**as_dict)
    assert again.to_dict() == as_dict
    assert again.vision_config.backbone_config.embed_dim_per_stage == [8, 12, 16, 24]
    assert again.mask_decoder_config.hidden_size == 128 and again.image_size == 64
    torch.manual_seed(0)
    state = Sam2VideoModel(again).state_dict()
    reference = _model().state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}
    assert sum(p.numel() for p in _model().parameters()) < 1_000_000
    assert tiny_sam2_video_config(32).prompt_encoder_config.image_size == 32
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_sam2_video_config(48)


def test_module_imports_only_torch_and_transformers():
    tree = ast.parse(Path(video_masklets.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            roots.add(node.module.split(".")[0])
    assert roots == {"torch", "transformers"}
    assert video_masklets.__all__ == ["add_masklets", "propagate_masklet"]
