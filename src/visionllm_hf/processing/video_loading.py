"""Read a video's frames from what users hold: a list of frames, a `(T, H, W, 3)` array, a frame folder or a file.

A video is sampled to a fixed number of frames, uniformly over its length (u-LLaVA samples T = 8 frames this
way); a video with fewer frames repeats some. Video files are decoded with PyAV (`pip install av`, the `video`
extra), which is imported only when a file is given.

This file ships with every checkpoint (``trust_remote_code``): it imports only numpy, torch and its sibling
`image_processing_visionllm`.
"""

import os
from pathlib import Path

import numpy as np
import torch

from .image_processing_visionllm import load_image

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def sample_frame_indices(total: int, num_frames: int) -> list[int]:
    """`num_frames` indices spread uniformly from the first to the last of `total` frames (first and last kept)."""
    if total < 1:
        raise ValueError("the video has no frames")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    return torch.linspace(0, total - 1, num_frames).round().long().tolist()


def load_video(video, num_frames: int, rescale_factor: float = 1 / 255) -> list[torch.Tensor]:
    """
    `num_frames` frames of `video`, each a `(3, height, width)` float tensor in [0, 1] (as `load_image` returns).

    Args:
        video: a list of frames (each a path, `PIL.Image`, numpy HWC array or torch CHW tensor), a numpy array of
            shape `(T, H, W, 3)`, a torch tensor of shape `(T, 3, H, W)`, a folder of frame images
            (read in file-name order) or a video file (decoded with PyAV).
        num_frames (`int`): frames to sample, uniformly over the video.
        rescale_factor (`float`, *optional*, defaults to 1/255): applied to 8-bit values.
    """
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return _frames_of_folder(path, num_frames, rescale_factor)
        if not path.is_file():
            raise ValueError(f"video path {str(path)!r} is neither a frame folder nor a file")
        return [load_image(frame, rescale_factor) for frame in _decode_file(path, num_frames)]
    if isinstance(video, (np.ndarray, torch.Tensor)):
        if video.ndim != 4:
            raise ValueError(
                f"a video array must hold frames: (T, H, W, 3) for numpy or (T, 3, H, W) for torch, got shape "
                f"{tuple(video.shape)} (one image? pass it as images=, or as a list of frames)"
            )
        indices = sample_frame_indices(len(video), num_frames)
        return [load_image(video[index], rescale_factor) for index in indices]
    if isinstance(video, (list, tuple)):
        if not video:
            raise ValueError("a video given as a list of frames has no frames")
        indices = sample_frame_indices(len(video), num_frames)
        return [load_image(video[index], rescale_factor) for index in indices]
    raise TypeError(
        "a video must be a list of frames, a (T, H, W, 3) numpy array, a (T, 3, H, W) torch tensor, a frame folder "
        f"or a video file path, got {type(video).__name__}"
    )


def _frames_of_folder(folder: Path, num_frames: int, rescale_factor: float) -> list[torch.Tensor]:
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise ValueError(f"the frame folder {str(folder)!r} holds no images ({', '.join(FRAME_SUFFIXES)})")
    return [load_image(files[index], rescale_factor) for index in sample_frame_indices(len(files), num_frames)]


def _decode_file(path: Path, num_frames: int) -> list[np.ndarray]:
    """The sampled frames of a video file as RGB arrays, decoded with PyAV."""
    try:
        import av
    except ImportError:
        raise ImportError(
            f"reading the video file {str(path)!r} needs PyAV: pip install av (or pass the frames, an array or a "
            "frame folder)"
        ) from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{str(path)!r} holds no video stream")
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.FFmpegError as error:
        raise ValueError(f"cannot decode the video file {str(path)!r}: {error}") from None
    return [frames[index] for index in sample_frame_indices(len(frames), num_frames)]


__all__ = ["load_video", "sample_frame_indices"]
