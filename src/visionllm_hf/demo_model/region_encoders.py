"""Region encoders: one embedding per visual prompt (binary mask over an image's global view).

- `VisionLLMV2RegionEncoder` (paper 002, appendix B.1): mask and image as 4 channels -> conv k7 s7, conv k2 s2,
  conv k1 s1, each followed by LayerNorm and GELU (stride 14 in all) -> plus the global view's vision feature
  map -> features grid-sampled inside the mask and averaged -> its own MLP projection to the LLM width.
- `RegionGPTRegionEncoder` (paper 003, section 3.1): two stride-2 deconvolutions refine the vision feature map
  4x; a region is the mask-pooled (masked average) refined feature; image tokens are the refined map
  average-pooled back to the low-resolution grid. Image and region features share the model's projector.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch and transformers.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (batch, channels, height, width) map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class RegionProjector(nn.Module):
    """Two-layer MLP from the vision feature width to the LLM width; with `norm`, then a LayerNorm."""

    def __init__(self, in_features: int, out_features: int, act: str, norm: bool = False):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(out_features, out_features)
        self.norm = nn.LayerNorm(out_features) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear_2(self.act(self.linear_1(x))))


def masked_average(feature_maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """
    Average each map over its mask, with the mask area-resized to the map so every map cell is weighted by the
    fraction of it the mask covers.

    Args:
        feature_maps (`torch.Tensor` of shape `(regions, channels, height, width)`)
        masks (`torch.Tensor` of shape `(regions, mask_height, mask_width)`)

    Returns:
        `torch.Tensor` of shape `(regions, channels)`.
    """
    weights = F.adaptive_avg_pool2d(masks[:, None].to(feature_maps.dtype), feature_maps.shape[-2:])[:, 0]
    total = weights.sum(dim=(1, 2)).clamp_min(torch.finfo(weights.dtype).tiny)
    return torch.einsum("rchw,rhw->rc", feature_maps, weights) / total[:, None]


class VisionLLMV2RegionEncoder(nn.Module):
    """
    Arguments:
        vision_feature_dim (`int`): width of the vision features the conv output is added to.
        text_hidden_size (`int`): LLM width the region embedding is projected to.
        conv_channels (`list[int]`): output widths of the first two convolutions (the third gives
            `vision_feature_dim`).
        sampling_factor (`int`): features are grid-sampled at `sampling_factor` x the feature grid resolution.
        act (`str`): activation of the projection MLP.
        output_norm (`bool`): end the projection with a LayerNorm (`VisionLLMConfig.projector_norm`).
    """

    kernel_sizes = (7, 2, 1)
    total_stride = 14

    def __init__(
        self, *, vision_feature_dim: int, text_hidden_size: int, conv_channels: list[int], sampling_factor: int, act: str,
        output_norm: bool = False,
    ):
        super().__init__()
        widths = [4, *conv_channels, vision_feature_dim]
        layers = []
        for kernel, in_width, out_width in zip(self.kernel_sizes, widths[:-1], widths[1:]):
            layers += [nn.Conv2d(in_width, out_width, kernel, stride=kernel), LayerNorm2d(out_width), nn.GELU()]
        self.convs = nn.Sequential(*layers)
        self.sampling_factor = sampling_factor
        self.projector = RegionProjector(vision_feature_dim, text_hidden_size, act, norm=output_norm)

    def region_feature_maps(self, global_maps: torch.Tensor, global_pixels: torch.Tensor, masks: torch.Tensor):
        """The conv features of mask + image, plus the global view's feature map: `(regions, channels, g, g)`."""
        grid = global_maps.shape[-1]
        prompt = torch.cat([global_pixels, masks[:, None].to(global_pixels.dtype)], dim=1)
        size = grid * self.total_stride
        if prompt.shape[-1] != size:  # tiles of another size than 14 px per feature cell
            # in float32: antialiased resizing has no half-precision kernel on every device
            prompt = F.interpolate(prompt.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.convs(prompt.to(self.convs[0].weight.dtype)) + global_maps

    def forward(self, global_maps: torch.Tensor, global_pixels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """
        Args:
            global_maps (`torch.Tensor` of shape `(regions, vision_feature_dim, g, g)`): each region's global view
                vision features.
            global_pixels (`torch.Tensor` of shape `(regions, 3, tile, tile)`): each region's global view pixels.
            masks (`torch.Tensor` of shape `(regions, tile, tile)`): the visual prompts.

        Returns:
            `torch.Tensor` of shape `(regions, text_hidden_size)`.
        """
        maps = self.region_feature_maps(global_maps, global_pixels, masks)
        side = maps.shape[-1] * self.sampling_factor
        centres = (torch.arange(side, device=maps.device, dtype=maps.dtype) + 0.5) / side * 2 - 1
        grid_y, grid_x = torch.meshgrid(centres, centres, indexing="ij")
        points = torch.stack([grid_x, grid_y], dim=-1).expand(len(maps), side, side, 2)
        sampled = F.grid_sample(maps, points, mode="bilinear", padding_mode="border", align_corners=False)
        return self.projector(masked_average(sampled, masks))


class RegionGPTRegionEncoder(nn.Module):
    """
    Arguments:
        vision_feature_dim (`int`): width of the vision features (kept by the refinement).
    """

    def __init__(self, *, vision_feature_dim: int):
        super().__init__()
        width = vision_feature_dim
        self.refine = nn.Sequential(
            nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
            LayerNorm2d(width),
            nn.GELU(),
            nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
        )

    def refine_maps(self, feature_maps: torch.Tensor) -> torch.Tensor:
        """`(tiles, channels, g, g)` -> `(tiles, channels, 4g, 4g)`."""
        return self.refine(feature_maps.to(self.refine[0].weight.dtype))

    @staticmethod
    def image_tokens(refined_maps: torch.Tensor, grid: int) -> torch.Tensor:
        """Refined maps pooled back to the `grid x grid` tokens: `(tiles, grid * grid, channels)`."""
        return F.adaptive_avg_pool2d(refined_maps, grid).flatten(2).transpose(1, 2)

    def forward(self, refined_maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mask pooling: `(regions, channels, 4g, 4g)` and `(regions, tile, tile)` -> `(regions, channels)`."""
        return masked_average(refined_maps, masks)


__all__ = ["LayerNorm2d", "RegionGPTRegionEncoder", "VisionLLMV2RegionEncoder", "masked_average"]
