"""Build the task decoders a config routes to, run them on super-link occurrences, and sum their losses.

Decoders are keyed by routing name (`"det"`, `"seg"`, ...), so each routing token owns its decoder and its
queries. Every decoder has the same small interface: `input_width`, `needs_image`, `encode_images(pixels)`
(if it reads the image), `forward(prompts, image_features, rows)`, `compute_loss(predictions, targets)` and
`results(predictions)`. Image-making decoders (`makes_images`) also take the image generation options
(`num_inference_steps`, `guidance_scale`, `image_guidance_scale`, `seed`) in `results`.

A decoder with `reads_visual_prompts` (the SAM mask decoder) also gets the user's visual prompts: the k-th of its
routing tokens in a sample reads that sample's k-th `<region>` mask (interactive segmentation: "segment
<region>" -> "[SEG]"), or none when the sample has fewer regions.

Decoders read `decoder_pixel_values`: per sample, the image its answer is about (the processor's choice: the
sample's last image by default, a video's first frame) resized to `config.decoder_image_size` squared and
normalised with ImageNet statistics. Predictions are in coordinates
normalised to that image, which are the original image's normalised coordinates.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and its siblings.
"""

import torch
from torch import nn

from .decoder_box import BoxDecoder
from .decoder_diffusion import DiffusionImageDecoder
from .decoder_keypoint import KeypointDecoder
from .decoder_mask import PromptableMaskDecoder
from .decoder_object import ObjectDecoder
from .super_link import RoutingOccurrence, SuperLink


def build_decoder(decoder_type: str, config) -> nn.Module:
    if decoder_type == "box":
        return BoxDecoder()
    if decoder_type == "mask":
        return PromptableMaskDecoder(sam_config=config.mask_decoder_config)
    if decoder_type == "object":
        return ObjectDecoder(detector_config=config.object_decoder_config)
    if decoder_type == "keypoint":
        return KeypointDecoder(detector_config=config.object_decoder_config, num_keypoints=len(config.keypoint_names))
    if decoder_type == "text_to_image":
        return DiffusionImageDecoder(diffusion_config=config.generation_decoder_config, editing=False)
    if decoder_type == "image_editing":
        return DiffusionImageDecoder(diffusion_config=config.editing_decoder_config, editing=True)
    raise ValueError(f"unknown decoder type '{decoder_type}'")


def decoder_input_width(decoder_type: str, config) -> int:
    """Width of the projected super-link states a decoder type reads."""
    if decoder_type == "mask":
        return config.mask_decoder_config.mask_decoder_config.hidden_size
    if decoder_type in ("object", "keypoint"):
        return config.object_decoder_config.d_model
    if decoder_type == "text_to_image":
        return config.generation_decoder_config["mapper"]["encoder_hidden_size"]
    if decoder_type == "image_editing":
        return config.editing_decoder_config["mapper"]["encoder_hidden_size"]
    return 256  # u-LLaVA's box decoder


def build_decoders(config) -> nn.ModuleDict | None:
    """One decoder per routed name, or None for a model without decoders."""
    if not config.routing_decoders:
        return None
    return nn.ModuleDict({name: build_decoder(kind, config) for name, kind in config.routing_decoders.items()})


def build_super_link(config) -> SuperLink | None:
    """Queries and projections for every routed name, or None for a model without decoders."""
    if not config.routing_decoders:
        return None
    if config.query_token_id is None:
        raise ValueError("routing decoders need query_token_id (the <query> token)")
    routing_token_ids = {}
    for name in config.routing_decoders:
        token_id = getattr(config, f"{name}_token_id")
        if token_id is None:
            raise ValueError(f"routing '{name}' has a decoder but {name}_token_id is not set")
        routing_token_ids[name] = token_id
    return SuperLink(
        hidden_size=config.text_config.hidden_size,
        routing_token_ids=routing_token_ids,
        num_queries=config.super_link_queries,
        output_widths={name: decoder_input_width(kind, config) for name, kind in config.routing_decoders.items()},
        query_token_id=config.query_token_id,
    )


def visual_prompts_by_row(
    input_ids: torch.LongTensor,
    region_token_id: int | None,
    region_masks: torch.Tensor | None,
    region_image_index: torch.LongTensor | None = None,
    decoder_image_index: torch.LongTensor | None = None,
) -> list[list[torch.Tensor]]:
    """
    Per sample, its region masks in `<region>` order (the processor lays regions out row by row). With
    `decoder_image_index`, only the regions drawn on the image the sample's decoders read: in an in-context
    prompt the examples' regions tell the LLM what to look for, they are not prompts on the query image.
    """
    per_row = [[] for _ in range(len(input_ids))]
    if region_masks is None or region_token_id is None:
        return per_row
    rows = (input_ids == region_token_id).nonzero()[:, 0].tolist()
    if len(rows) != len(region_masks):
        raise ValueError(f"input_ids hold {len(rows)} <region> tokens but {len(region_masks)} region_masks were given")
    on_decoder_image = [True] * len(rows)
    if decoder_image_index is not None and region_image_index is not None:
        decoder_images = decoder_image_index.tolist()
        on_decoder_image = [image == decoder_images[row] for row, image in zip(rows, region_image_index.tolist())]
    for row, mask, keep in zip(rows, region_masks, on_decoder_image):
        if keep:
            per_row[row].append(mask)
    return per_row


def _visual_prompts_for(occurrences: list[RoutingOccurrence], indices: list[int], by_row: list[list]) -> list:
    """The k-th occurrence of a decoder in a row reads the row's k-th visual prompt (None past the last)."""
    seen, prompts = {}, []
    for index in indices:
        row = occurrences[index].row
        k = seen[row] = seen.get(row, -1) + 1
        prompts.append(by_row[row][k] if k < len(by_row[row]) else None)
    return prompts


def run_decoders(
    super_link: SuperLink,
    decoders: nn.ModuleDict,
    occurrences: list[RoutingOccurrence],
    decoder_pixel_values: torch.Tensor | None,
    visual_prompts: list[list[torch.Tensor]] | None = None,
) -> dict[str, tuple[list[int], dict]]:
    """
    Run each decoder once on all its occurrences; `visual_prompts` (from `visual_prompts_by_row`) go to the
    decoders that read them.

    Returns:
        routing name -> (indices into `occurrences`, the decoder's batched predictions in that order).
    """
    outputs = {}
    for name, decoder in decoders.items():
        indices = [index for index, occurrence in enumerate(occurrences) if occurrence.name == name]
        if not indices:
            continue
        parameter = next(decoder.parameters())  # device_map may put the decoder elsewhere, in its own dtype
        device, dtype = parameter.device, parameter.dtype
        prompts = torch.stack([super_link.project(occurrences[index]) for index in indices]).to(device)
        rows = torch.tensor([occurrences[index].row for index in indices], device=device)
        image_features = None
        if decoder.needs_image:
            if decoder_pixel_values is None:
                raise ValueError(f"the '{name}' decoder reads the image: pass the processor's decoder_pixel_values")
            needed, rows = rows.unique(return_inverse=True)
            image_features = decoder.encode_images(decoder_pixel_values.to(device, dtype)[needed])
        extra = {}
        if getattr(decoder, "reads_visual_prompts", False) and visual_prompts is not None:
            extra["visual_prompts"] = _visual_prompts_for(occurrences, indices, visual_prompts)
        outputs[name] = (indices, decoder(prompts, image_features, rows, **extra))
    return outputs


def decoder_losses(
    decoders: nn.ModuleDict,
    outputs: dict[str, tuple[list[int], dict]],
    targets: list[dict],
) -> dict[str, torch.Tensor]:
    """Every loss component of every decoder that ran; `targets` holds one dict per occurrence, in order."""
    losses = {}
    for name, (indices, predictions) in outputs.items():
        for component, value in decoders[name].compute_loss(predictions, [targets[i] for i in indices]).items():
            losses[component] = losses[component] + value if component in losses else value
    return losses


def decoder_results(decoders: nn.ModuleDict, outputs: dict, count: int, image_options: dict | None = None) -> list[dict]:
    """Per occurrence (in order) the decoder's result dict; `image_options` go to the image-making decoders."""
    results = [None] * count
    for name, (indices, predictions) in outputs.items():
        decoder = decoders[name]
        options = (image_options or {}) if getattr(decoder, "makes_images", False) else {}
        for index, result in zip(indices, decoder.results(predictions, **options)):
            results[index] = result
    return results


__all__ = [
    "build_decoder",
    "build_decoders",
    "build_super_link",
    "decoder_input_width",
    "decoder_losses",
    "decoder_results",
    "run_decoders",
    "visual_prompts_by_row",
]
