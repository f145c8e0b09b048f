"""Turn a super-link `generate` output into text and objects (labels, scores, boxes, masks) in image pixels.

This file ships with every checkpoint (``trust_remote_code``): it imports only numpy, torch, torchvision and its
siblings.
"""

import string

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import nms

from .special_tokens import QUERY_TOKEN, ROUTING_TOKENS

LABEL_TRIM = string.whitespace + string.punctuation


SET_PREDICTIONS = ("det", "pose")  # routing whose decoder proposes many candidates: thresholded and NMS-filtered


def post_process_generation(
    tokenizer, outputs, target_sizes, threshold: float, mask_threshold: float, nms_threshold: float | None
) -> list[dict]:
    if torch.is_tensor(outputs) or not hasattr(outputs, "results"):
        raise TypeError(
            f"post_process_generation needs what generate returns for a model with decoders (a "
            f"VisionLLMGenerateOutput), got {type(outputs).__name__}; call generate without "
            "return_dict_in_generate=False, or use post_process_image_text_to_text for token ids"
        )
    sequences = outputs.sequences
    if target_sizes is not None:
        target_sizes = _checked_sizes(target_sizes, len(sequences))
    query_id = tokenizer.convert_tokens_to_ids(QUERY_TOKEN)
    processed = []
    for row, results in enumerate(outputs.results):
        ids = sequences[row].tolist()
        size = None if target_sizes is None else target_sizes[row]
        answer_end = outputs.prompt_length + int(outputs.attention_mask[row, outputs.prompt_length :].sum())
        text = tokenizer.decode(ids[outputs.prompt_length : answer_end], skip_special_tokens=True).strip()
        objects, images, boundary = [], [], outputs.prompt_length
        for result in results:
            label = tokenizer.decode(ids[boundary : result["position"]], skip_special_tokens=True).strip(LABEL_TRIM)
            boundary = result["position"] + 1
            while boundary < len(ids) and ids[boundary] == query_id:
                boundary += 1
            if "images" in result:
                routing = ROUTING_TOKENS.get(result["routing"], result["routing"])
                images += [{"label": label, "routing": routing, "image": image} for image in result["images"]]
            else:
                objects += _objects(result, label, size, threshold, mask_threshold, nms_threshold)
        processed.append({"text": text, "objects": objects, "images": images})
    return processed


def _checked_sizes(target_sizes, count: int) -> list[tuple[int, int]]:
    """`(height, width)` per sample, positive integers."""
    sizes = target_sizes.tolist() if torch.is_tensor(target_sizes) else list(target_sizes)
    if len(sizes) != count:
        raise ValueError(f"target_sizes has {len(sizes)} entries for {count} samples")
    checked = []
    for index, size in enumerate(sizes):
        try:
            height, width = (float(value) for value in size)
        except (TypeError, ValueError):
            raise ValueError(f"target_sizes[{index}] must be (height, width), got {size!r}") from None
        if not (height >= 1 and width >= 1 and height == int(height) and width == int(width)):
            raise ValueError(f"target_sizes[{index}] must be positive whole pixels (height, width), got {size!r}")
        checked.append((int(height), int(width)))
    return checked


def _objects(result: dict, label: str, size, threshold: float, mask_threshold: float, nms_threshold) -> list[dict]:
    """
    The objects of one routing token, best first. A set prediction (`[DET]`, `[POSE]`: one candidate per decoder
    query) keeps the candidates scoring at least `threshold`, without those overlapping a better one by more than
    `nms_threshold` IoU (torchvision's NMS); other routing tokens give their one answer whatever its score.
    """
    scores = result["scores"].float().cpu()
    boxes = result.get("boxes")
    masks = result.get("masks")
    keypoints = result.get("keypoints")
    kept = scores.argsort(descending=True)
    if result["routing"] in SET_PREDICTIONS:
        kept = kept[scores[kept] >= threshold]
        if nms_threshold is not None and boxes is not None and len(kept):
            kept = kept[nms(boxes.float().cpu()[kept], scores[kept], nms_threshold)]
    objects = []
    for index in kept.tolist():
        mask = None
        if masks is not None:
            mask = _mask_in_pixels(masks[index].float().cpu(), size, mask_threshold)
        box = boxes[index].float().cpu() if boxes is not None else _box_of(mask, size)
        found = {
            "label": label,
            "routing": ROUTING_TOKENS.get(result["routing"], result["routing"]),
            "score": float(scores[index]),
            "box": None if box is None else _scale(box.view(2, 2), size).flatten().tolist(),
            "mask": mask,
            "keypoints": None if keypoints is None else _keypoints(keypoints[index].float().cpu(), size),
        }
        if result.get("video_masks") is not None:  # a [SEG] about a video: its masklet, one mask per frame
            frames = result["video_masks"][index].float().cpu()
            found["video_masks"] = np.stack([_mask_in_pixels(frame, size, mask_threshold) for frame in frames])
            found["video_scores"] = result["video_scores"][index].float().cpu().tolist()
        objects.append(found)
    return objects


def _scale(points: torch.Tensor, size) -> torch.Tensor:
    """Normalised (x, y) points -> pixels of an image of `size` = (height, width); unchanged without a size."""
    if size is None:
        return points
    height, width = size
    return points * torch.tensor([width, height], dtype=points.dtype)


def _mask_in_pixels(probabilities: torch.Tensor, size, mask_threshold: float) -> np.ndarray:
    if size is not None:
        probabilities = F.interpolate(probabilities[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return (probabilities > mask_threshold).numpy()


def _box_of(mask: np.ndarray | None, size) -> torch.Tensor | None:
    """The normalised xyxy box around a mask's pixels, or None for no mask or an empty one."""
    if mask is None or not mask.any():
        return None
    rows, columns = np.nonzero(mask)
    height, width = mask.shape
    return torch.tensor([columns.min() / width, rows.min() / height, (columns.max() + 1) / width, (rows.max() + 1) / height])


def _keypoints(keypoints: torch.Tensor, size) -> list[list[float]]:
    """`(k, 3)` normalised (x, y, visibility score) -> pixels."""
    xy = _scale(keypoints[:, :2], size)
    return torch.cat([xy, keypoints[:, 2:]], dim=1).tolist()


__all__ = ["post_process_generation"]
