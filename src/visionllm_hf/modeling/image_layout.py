"""Which tiles, images and regions of a batch belong to which sample.

The image inputs are laid out per image, not per sample: `pixel_values` holds every tile of every image in
`<image>` order, `image_grids` one row per image, `region_masks` one mask per `<region>` in order,
`region_image_index` each region's image in the flat image list, and `pixel_values_videos` one entry per video
in `<video>` order. `decoder_image_index` (one per sample) also points into the flat image list. The token ids say
how they split into samples: a sample holds `tiles * image_seq_length` `<image>` tokens per image, one `<region>`
token per region and `image_seq_length + frames` `<video>` tokens per video.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch.
"""

import torch

PER_IMAGE_INPUTS = (
    "pixel_values", "image_grids", "region_masks", "region_image_index", "pixel_values_videos", "decoder_image_index",
)


def tiles_per_image(image_grids: torch.LongTensor, use_global_view: bool) -> list[int]:
    """Tiles each image holds in `pixel_values`: its local grid plus the global view."""
    return (image_grids.prod(dim=-1) + int(use_global_view)).tolist()


def images_per_sample(token_ids: torch.LongTensor, image_token_id: int, image_seq_length: int, tiles: list[int]) -> list[int]:
    """How many of the batch's images (given as tiles per image, in order) each sample's `<image>` tokens take."""
    tiles_left = ((token_ids == image_token_id).sum(1) // image_seq_length).tolist()
    counts, image = [], 0
    for row, wanted in enumerate(tiles_left):
        start = image
        while wanted > 0 and image < len(tiles):
            wanted -= tiles[image]
            image += 1
        if wanted != 0:
            raise ValueError(f"sample {row}'s <image> tokens do not match whole images of pixel_values/image_grids")
        counts.append(image - start)
    if image != len(tiles):
        raise ValueError(f"the samples' <image> tokens take {image} images but {len(tiles)} were given")
    return counts


def expand_image_inputs(
    inputs: dict, token_ids: torch.LongTensor, expand_size: int, *, image_token_id: int, region_token_id: int | None,
    image_seq_length: int, use_global_view: bool, video_token_id: int | None = None,
) -> dict:
    """
    The per-image inputs of a batch whose rows are each repeated `expand_size` times in a row (beam search,
    `num_return_sequences`): each sample's own tiles, grids, regions and videos repeated with it, and
    `region_image_index` / `decoder_image_index` pointing into the repeated image list.
    """
    expanded = _expand_images(inputs, token_ids, expand_size, image_token_id, region_token_id, image_seq_length, use_global_view)
    videos = inputs.get("pixel_values_videos")
    if videos is not None:
        per_video = image_seq_length + videos.shape[1]
        counts = ((token_ids == video_token_id).sum(1) // per_video).tolist()
        starts = torch.tensor([0] + counts).cumsum(0).tolist()
        order = [v for row in range(len(token_ids)) for _ in range(expand_size) for v in range(starts[row], starts[row + 1])]
        if starts[-1] != len(videos):
            raise ValueError(f"the samples' <video> tokens take {starts[-1]} videos but {len(videos)} were given")
        expanded["pixel_values_videos"] = videos[order]
    return expanded


def _expand_images(inputs, token_ids, expand_size, image_token_id, region_token_id, image_seq_length, use_global_view):
    pixel_values, image_grids = inputs.get("pixel_values"), inputs.get("image_grids")
    if pixel_values is None:
        if inputs.get("decoder_image_index") is not None:  # no image anywhere: every index is -1
            return {"decoder_image_index": inputs["decoder_image_index"].repeat_interleave(expand_size, dim=0)}
        return {}
    if image_grids is None:  # each tile its own image
        image_grids = torch.ones(len(pixel_values), 2, dtype=torch.long, device=pixel_values.device)
        use_global_view = False
    tiles = tiles_per_image(image_grids, use_global_view)
    image_counts = images_per_sample(token_ids, image_token_id, image_seq_length, tiles)
    image_starts = torch.tensor([0] + image_counts).cumsum(0).tolist()
    tile_starts = torch.tensor([0] + tiles).cumsum(0).tolist()
    region_counts, region_index = [0] * len(token_ids), []
    if inputs.get("region_masks") is not None:
        region_counts = (token_ids == region_token_id).sum(1).tolist()
        region_index = inputs["region_image_index"].tolist()
    region_starts = torch.tensor([0] + region_counts).cumsum(0).tolist()
    decoder_index = inputs["decoder_image_index"].tolist() if inputs.get("decoder_image_index") is not None else None

    tile_order, image_order, region_order, region_image, decoder_image = [], [], [], [], []
    for row in range(len(token_ids)):
        first, last = image_starts[row], image_starts[row + 1]
        for _ in range(expand_size):
            new_first = len(image_order)
            image_order.extend(range(first, last))
            tile_order.extend(range(tile_starts[first], tile_starts[last]))
            for region in range(region_starts[row], region_starts[row + 1]):
                region_order.append(region)
                region_image.append(new_first + region_index[region] - first)
            if decoder_index is not None:
                decoder_image.append(-1 if decoder_index[row] < 0 else new_first + decoder_index[row] - first)
    device = pixel_values.device
    expanded = {"pixel_values": pixel_values[tile_order]}
    if inputs.get("image_grids") is not None:
        expanded["image_grids"] = inputs["image_grids"][image_order]
    if inputs.get("region_masks") is not None:
        expanded["region_masks"] = inputs["region_masks"][region_order]
        expanded["region_image_index"] = torch.tensor(region_image, dtype=torch.long, device=device)
    if decoder_index is not None:
        expanded["decoder_image_index"] = torch.tensor(decoder_image, dtype=torch.long, device=device)
    return expanded


__all__ = ["PER_IMAGE_INPUTS", "expand_image_inputs", "images_per_sample", "tiles_per_image"]
