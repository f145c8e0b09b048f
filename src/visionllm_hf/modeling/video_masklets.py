"""Masklets: one mask on one frame of a video, propagated to every frame by transformers' own `Sam2VideoModel`.

The inference session is built directly (`Sam2VideoInferenceSession`), so no `Sam2VideoProcessor` files are
needed: frames are resized to `config.image_size` (bilinear, antialiased) and normalised with the SAM2 video
processor's defaults, ImageNet mean `[0.485, 0.456, 0.406]` and std `[0.229, 0.224, 0.225]`; the mask prompt is
resized and binarised at 0.5 as `Sam2VideoProcessor.add_inputs_to_inference_session(..., input_masks=...)` does.
The same code runs on transformers 5.23 and 5.24 (their `sam2_video` APIs are identical).

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and transformers.
"""

import torch
import torch.nn.functional as F
from transformers import Sam2VideoInferenceSession, Sam2VideoModel

# ImageNet statistics: the SAM 2 video processor's defaults, and how the VisionLLM processor normalises the
# decoders' frames (`decoder_pixel_values_videos`)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize(images: torch.Tensor, size, antialias: bool = True) -> torch.Tensor:
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=antialias)


@torch.no_grad()
def propagate_masklet(
    video_model: Sam2VideoModel, frames: torch.Tensor, mask: torch.Tensor, frame_index: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Turns one mask on one frame into a masklet: a mask and an object score on every frame of the video.

    Propagates forward from `frame_index` to the last frame, then backward to frame 0 (`reverse=True`) when
    `frame_index > 0`. Runs on the model's device and dtype; the model is put in eval mode for the call.

    Args:
        video_model (`Sam2VideoModel`):
            The SAM2 video model.
        frames (`torch.Tensor` of shape `(T, 3, H, W)`):
            RGB frames with values in [0, 1].
        mask (`torch.Tensor` of shape `(h, w)`):
            Boolean mask or float probabilities of the object on frame `frame_index`, at any resolution; it is
            resized to the model's input size and binarised at 0.5.
        frame_index (`int`, *optional*, defaults to 0):
            The frame the mask belongs to.

    Returns:
        `tuple(torch.Tensor, torch.Tensor)`: `masks` of shape `(T, H, W)`, mask probabilities at the frames'
        resolution, and `scores` of shape `(T,)`, the model's object score per frame as a probability (sigmoid of
        its object score logit). On frame `frame_index` SAM2 outputs the prompt mask itself (resampled through the
        model's low-resolution mask grid), with score sigmoid(10) when the mask is not empty, sigmoid(-10) otherwise.
        Both are float32, on the model's device.
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"`frames` must have shape (T, 3, H, W), got {tuple(frames.shape)}")
    if mask.dim() != 2:
        raise ValueError(f"`mask` must have shape (h, w), got {tuple(mask.shape)}")
    num_frames, _, height, width = frames.shape
    if not 0 <= frame_index < num_frames:
        raise ValueError(f"`frame_index` {frame_index} is outside the video's {num_frames} frames")
    device, dtype, size = video_model.device, video_model.dtype, video_model.config.image_size

    pixels = _resize(frames.to(device, torch.float32), (size, size))
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    session = Sam2VideoInferenceSession(
        video=(pixels - mean) / std,
        video_height=height,
        video_width=width,
        inference_device=device,
        inference_state_device=device,
        video_storage_device=device,
        dtype=dtype,
    )
    prompt = _resize(mask.to(device, torch.float32)[None, None], (size, size)) >= 0.5
    object_index = session.obj_id_to_idx(1)
    session.add_mask_inputs(object_index, frame_index, prompt.float())
    session.obj_with_new_inputs = [1]

    masks = torch.full((num_frames, height, width), float("nan"), device=device)
    scores = torch.full((num_frames,), float("nan"), device=device)
    was_training = video_model.training
    video_model.eval()
    try:
        for reverse in (False, True):
            for output in video_model.propagate_in_video_iterator(
                session, start_frame_idx=frame_index, reverse=reverse
            ):
                # as `Sam2VideoVideoProcessor.post_process_masks` does: to the model's input size, then the frames'
                logits = _resize(output.pred_masks[:1].float(), (size, size), antialias=False)
                masks[output.frame_idx] = _resize(logits, (height, width), antialias=False)[0, 0].sigmoid()
                scores[output.frame_idx] = output.object_score_logits.float().reshape(-1)[0].sigmoid()
    finally:
        video_model.train(was_training)
    return masks, scores


def add_masklets(
    video_model: Sam2VideoModel,
    results: list[list[dict]],
    videos_per_row: list[int],
    decoder_pixel_values_videos: torch.Tensor,
    decoder_image_index: torch.LongTensor | None = None,
):
    """
    Give every `[SEG]` mask about a video its masklet, in place: for a row whose decoders read its first video's
    first frame (a row with a video and no image the decoders read), each `seg` result gets `video_masks`
    `(masks, T, size, size)` probabilities over that video's frames and `video_scores` `(masks, T)`.

    Args:
        video_model (`Sam2VideoModel`): the tracker.
        results (`list[list[dict]]`): per row, the decoders' results (as generation makes them).
        videos_per_row (`list[int]`): how many of the batch's videos each row holds, in order.
        decoder_pixel_values_videos (`torch.Tensor` of shape `(num_videos, T, 3, size, size)`): every video's
            frames at the decoders' resolution, ImageNet-normalised (the processor's).
        decoder_image_index (`torch.LongTensor`, *optional*): per row, the image its decoders read (-1: none).
    """
    mean = torch.tensor(IMAGENET_MEAN, device=decoder_pixel_values_videos.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=decoder_pixel_values_videos.device).view(1, 3, 1, 1)
    first_video = 0
    for row, row_results in enumerate(results):
        reads_video = videos_per_row[row] > 0 and (decoder_image_index is None or int(decoder_image_index[row]) < 0)
        if reads_video:
            frames = (decoder_pixel_values_videos[first_video].float() * std + mean).clamp(0, 1)
            for result in row_results:
                if result["routing"] != "seg" or result.get("masks") is None:
                    continue
                masklets = [propagate_masklet(video_model, frames, mask) for mask in result["masks"]]
                result["video_masks"] = torch.stack([masks for masks, _ in masklets])
                result["video_scores"] = torch.stack([scores for _, scores in masklets])
        first_video += videos_per_row[row]


__all__ = ["add_masklets", "propagate_masklet"]
