"""VisionLLM: a vision tower, a projector and a causal LM, with image features written into `<image>` slots.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch, transformers and its
sibling ``configuration_visionllm``.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    BaseModelOutputWithPooling,
    CausalLMOutputWithPast,
    ModelOutput,
)
from transformers.utils.generic import can_return_tuple

from .configuration_visionllm import VisionLLMConfig
from .decoders import build_decoders, build_super_link, decoder_losses, run_decoders, visual_prompts_by_row
from .answer_forcing import generate_kwargs_with_forced_answers
from .image_layout import PER_IMAGE_INPUTS, expand_image_inputs, tiles_per_image
from .input_checks import check_left_padding, generation_length, warn_past_positions, weights_file_errors
from .region_encoders import RegionGPTRegionEncoder, VisionLLMV2RegionEncoder
from .super_link import RoutingOccurrence
from .super_link_generation import VisionLLMGenerateOutput, generate_with_super_link
from .transformers_compat import LOSS_KWARGS, cache_argument, merge_cache_arguments, output_cache


@dataclass
class VisionLLMModelOutputWithPast(BaseModelOutputWithPast):
    """
    Output of [`VisionLLMModel`]: transformers' `BaseModelOutputWithPast` (`last_hidden_state`, the KV cache,
    `hidden_states`, `attentions`) plus:

    Args:
        image_outputs (`BaseModelOutputWithPooling`, *optional*):
            The vision tower's output; `pooler_output` holds per image the projected tokens written into its
            `<image>` positions (as [`VisionLLMModel.get_image_features`] returns it).
        image_hidden_states (`torch.FloatTensor` of shape `(num_tiles, image_seq_length, hidden_size)`, *optional*):
            The same projected tokens, per tile.
    """

    image_outputs: BaseModelOutputWithPooling | None = None
    image_hidden_states: torch.FloatTensor | None = None


@dataclass
class VisionLLMCausalLMOutputWithPast(CausalLMOutputWithPast):
    """
    Output of [`VisionLLMForConditionalGeneration`]: transformers' `CausalLMOutputWithPast` (`loss`, `logits`, the
    KV cache, `hidden_states`, `attentions`) plus:

    Args:
        image_outputs (`BaseModelOutputWithPooling`, *optional*):
            The vision tower's output; `pooler_output` holds per image the projected tokens written into its
            `<image>` positions.
        image_hidden_states (`torch.FloatTensor`, *optional*):
            The same projected tokens, per tile `(num_tiles, image_seq_length, hidden_size)`.
        lm_loss (`torch.FloatTensor`, *optional*):
            The language-modelling part of `loss`.
        decoder_losses (`dict[str, torch.FloatTensor]`, *optional*):
            Every decoder loss component before weighting (`box_l1`, `mask_dice`, ...), for logging.
        super_link_occurrences (`list[RoutingOccurrence]`, *optional*):
            Every routing token of the input with the last-layer states of its super-link queries.

    The KV cache field is `past_key_values` before transformers 5.24 and `cache` from 5.24 on (the output
    classes are transformers' own, so each release gets its own name).
    """

    image_outputs: BaseModelOutputWithPooling | None = None
    image_hidden_states: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    decoder_losses: dict[str, torch.FloatTensor] | None = None
    super_link_occurrences: list[RoutingOccurrence] | None = None


PREFILL_ONLY_INPUTS = ("region_masks", "region_image_index", "pixel_values_videos")


def build_region_encoder(config: VisionLLMConfig) -> nn.Module | None:
    """The region encoder `config.region_encoder_type` names, or None."""
    if config.region_encoder_type is None:
        return None
    if config.region_encoder_type == "regiongpt":
        return RegionGPTRegionEncoder(vision_feature_dim=config.vision_feature_dim)
    return VisionLLMV2RegionEncoder(
        vision_feature_dim=config.vision_feature_dim,
        text_hidden_size=config.text_config.hidden_size,
        conv_channels=config.region_conv_channels,
        sampling_factor=config.region_sampling_factor,
        act=config.projector_hidden_act,
        output_norm=config.projector_norm,
    )


def _is_prefill(cache: Cache | None) -> bool:
    return cache is None or cache.get_seq_length() == 0


def frame_changes(frame_means: torch.Tensor) -> torch.Tensor:
    """
    `(videos, T, dim)` frame averages -> how each changed since the previous frame (zero for the first),
    standardised over its features (a layer norm without weights). Between two frames a moving shape shifts a
    frame's average by a few hundredths of its size; standardised, the change is as loud as a frame's features.
    """
    changes = torch.diff(frame_means, dim=1, prepend=frame_means[:, :1])
    return nn.functional.layer_norm(changes, changes.shape[-1:])


class VisionLLMMultiModalProjector(nn.Module):
    """
    Two-layer MLP from the vision feature width to the LLM width (LLaVA-1.5's `mlp2x_gelu`), with
    `config.projector_norm` followed by a LayerNorm that keeps image tokens at the text embeddings' scale.
    """

    def __init__(self, config: VisionLLMConfig):
        super().__init__()
        text_width = config.text_config.hidden_size
        self.linear_1 = nn.Linear(config.vision_feature_dim, text_width, bias=config.multimodal_projector_bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_width, text_width, bias=config.multimodal_projector_bias)
        self.norm = nn.LayerNorm(text_width) if config.projector_norm else nn.Identity()

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear_2(self.act(self.linear_1(image_features))))


class VisionLLMPreTrainedModel(PreTrainedModel):
    config: VisionLLMConfig
    config_class = VisionLLMConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values", "cache"]
    # device_map="auto" keeps each of these whole on one device (they also hold tied weights accelerate
    # cannot place apart); transformers adds the vision tower's and the LLM's own blocks.
    _no_split_modules = [
        "VisionLLMMultiModalProjector",
        "VisionLLMV2RegionEncoder",
        "RegionGPTRegionEncoder",
        "SuperLink",
        "BoxDecoder",
        "PromptableMaskDecoder",
        "ObjectDecoder",
        "KeypointDecoder",
        "DiffusionImageDecoder",
    ]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        with weights_file_errors(pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


class VisionLLMModel(VisionLLMPreTrainedModel):
    """The vision tower, the projector, the region encoder and the LLM backbone, without the LM head."""

    def __init__(self, config: VisionLLMConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = VisionLLMMultiModalProjector(config)
        self.region_encoder = build_region_encoder(config)
        self.super_link = build_super_link(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """
        The selected vision layer's features before projection: `(num_tiles, image_seq_length, vision_feature_dim)`.
        """
        return self._run_vision_tower(pixel_values)[1]

    def _run_vision_tower(self, pixel_values: torch.Tensor, **kwargs) -> tuple[ModelOutput, torch.Tensor]:
        """The tower's own output, and the selected layer's features `(num_tiles, image_seq_length, dim)`."""
        kwargs.pop("output_hidden_states", None)  # the feature layer is read from the hidden states
        tower_dtype = next(self.vision_tower.parameters()).dtype
        outputs = self.vision_tower(pixel_values.to(tower_dtype), output_hidden_states=True, return_dict=True, **kwargs)
        features = outputs.hidden_states[self.config.vision_feature_layer]
        if features.dim() == 4:  # a (batch, channels, height, width) map, as timm towers return
            return outputs, features.flatten(2).transpose(1, 2)
        if self.config.vision_feature_select_strategy == "default":
            return outputs, features[:, 1:]
        return outputs, features

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, image_grids: torch.LongTensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """
        Encode images into the LLM-width tokens that fill their `<image>` positions.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, tile_size, tile_size)`):
                Every tile of every image in the batch, in placeholder order (as the processor returns them).
            image_grids (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
                `[columns, rows]` of each image's local tiles (the processor's); without it each tile is one image.

        Returns:
            The vision tower's output (`last_hidden_state`, `hidden_states`, ...) with `pooler_output` holding, per
            image, its tiles' projected tokens `(tiles * image_seq_length, text_hidden_size)`.
        """
        outputs, image_tokens, _ = self._encode_images(pixel_values, **kwargs)
        outputs.pooler_output = self._tokens_per_image(image_tokens, image_grids)
        return outputs

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """
        u-LLaVA's spatio-temporal video tokens: `(num_videos, image_seq_length + T, text_hidden_size)`.

        Every frame goes through the vision tower; the spatial tokens are the patch features averaged over the T
        frames (one per patch), the temporal tokens each frame's features averaged over its patches (one per
        frame). Both go through the image projector, so a video adds no parameters of its own: only the
        embeddings of `<vid_beg>` and `</vid_end>` around them are new. With `config.video_temporal_tokens ==
        "frame_changes"` a temporal token is how its frame's average changed since the previous frame instead
        (`frame_changes`).

        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(num_videos, T, 3, tile_size, tile_size)`):
                Each video's sampled frames (the processor's).
        """
        if pixel_values_videos.dim() != 5:
            raise ValueError(
                f"pixel_values_videos must be (num_videos, frames, 3, size, size), got {tuple(pixel_values_videos.shape)}"
            )
        num_videos, num_frames = pixel_values_videos.shape[:2]
        _, features = self._run_vision_tower(pixel_values_videos.flatten(0, 1))
        features = features.unflatten(0, (num_videos, num_frames))  # videos, frames, patches, dim
        spatial, temporal = features.mean(dim=1), features.mean(dim=2)
        if self.config.video_temporal_tokens == "frame_changes":
            temporal = frame_changes(temporal)
        return self._project(torch.cat([spatial, temporal], dim=1))

    def _tokens_per_image(self, image_tokens: torch.Tensor, image_grids: torch.LongTensor | None) -> list[torch.Tensor]:
        """Per-tile tokens `(tiles, seq, width)` as one `(tiles_i * seq, width)` tensor per image."""
        if image_grids is None:
            return list(image_tokens)
        tiles = tiles_per_image(image_grids, self.config.use_global_view)
        return [tokens.flatten(0, 1) for tokens in image_tokens.split(tiles)]

    def _encode_images(self, pixel_values: torch.Tensor, **kwargs) -> tuple[ModelOutput, torch.Tensor, torch.Tensor | None]:
        """
        The tower's output, the projected image tokens per tile, and the per-tile feature maps the region encoder
        reads (None without one).
        """
        outputs, features = self._run_vision_tower(pixel_values, **kwargs)
        if self.region_encoder is None:
            return outputs, self._project(features), None
        grid = self.config.feature_grid_size
        maps = features.transpose(1, 2).unflatten(2, (grid, grid))
        if self.config.region_encoder_type == "regiongpt":
            maps = self.region_encoder.refine_maps(maps)
            features = self.region_encoder.image_tokens(maps, grid)
        return outputs, self._project(features), maps

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        return self.multi_modal_projector(features.to(self.multi_modal_projector.linear_1.weight.dtype))

    def get_region_features(
        self,
        feature_maps: torch.Tensor,
        pixel_values: torch.Tensor,
        image_grids: torch.LongTensor,
        region_masks: torch.Tensor,
        region_image_index: torch.LongTensor,
    ) -> torch.Tensor:
        """
        One LLM-width embedding per region: `(num_regions, text_hidden_size)`.

        Args:
            feature_maps (`torch.Tensor`): per-tile maps from `_encode_images`.
            pixel_values (`torch.Tensor`): the tiles, to find each image's global view.
            image_grids (`torch.LongTensor` of shape `(num_images, 2)`): tiles per image.
            region_masks (`torch.Tensor` of shape `(num_regions, tile_size, tile_size)`): the visual prompts,
                over each image's global view.
            region_image_index (`torch.LongTensor` of shape `(num_regions,)`): each region's image.
        """
        global_view = self._global_view_index(image_grids)[region_image_index.to(image_grids.device)]
        global_view = global_view.to(feature_maps.device)
        masks = region_masks.to(feature_maps.device, feature_maps.dtype)
        if self.config.region_encoder_type == "regiongpt":
            return self._project(self.region_encoder(feature_maps[global_view], masks))
        global_pixels = pixel_values.to(feature_maps.device)[global_view]
        return self.region_encoder(feature_maps[global_view], global_pixels, masks)

    def _global_view_index(self, image_grids: torch.LongTensor) -> torch.LongTensor:
        """Index in `pixel_values` of each image's global view (its last tile)."""
        local_tiles = image_grids.prod(dim=-1)
        if not self.config.use_global_view and (local_tiles > 1).any():
            raise ValueError("regions need each image's global view: set use_global_view=True or max_tiles=1")
        return (local_tiles + int(self.config.use_global_view)).cumsum(0) - 1

    def _check_placeholders(self, input_ids: torch.LongTensor, token_id: int, features: torch.Tensor, what: str):
        """Positions of `token_id`, checked against the number of feature vectors that fill them."""
        mask = input_ids == token_id
        num_tokens, num_features = int(mask.sum()), features.shape[0] * features.shape[1]
        if num_tokens != num_features:
            raise ValueError(
                f"{what} features and tokens do not match: {num_tokens} {what} tokens in input_ids but "
                f"{num_features} features ({'x'.join(map(str, features.shape[:-1]))}). Build inputs with the "
                "VisionLLM processor, which expands each <image> and checks <region> counts."
            )
        return mask

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_grids: torch.LongTensor | None = None,
        region_masks: torch.Tensor | None = None,
        region_image_index: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        **kwargs,
    ) -> VisionLLMModelOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids with each `<image>` already expanded to its tiles' tokens by the processor.
            pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, tile_size, tile_size)`, *optional*):
                Every tile of every image, in placeholder order.
            image_grids (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
                `[columns, rows]` of each image's local tiles; checks that `pixel_values` holds exactly the
                announced tiles, and locates each image's global view for regions.
            region_masks (`torch.Tensor` of shape `(num_regions, tile_size, tile_size)`, *optional*):
                Visual prompts as binary masks over their image's global view, in `<region>` order.
            region_image_index (`torch.LongTensor` of shape `(num_regions,)`, *optional*):
                Index of each region's image among the batch's images.
            cache (`Cache`, *optional*):
                The KV cache (`past_key_values` is the same argument under its name before transformers 5.24).
            pixel_values_videos (`torch.FloatTensor` of shape `(num_videos, T, 3, tile_size, tile_size)`, *optional*):
                Every video's sampled frames, in `<video>` order; fill the `<video>` tokens (see
                `get_video_features`).
        """
        cache = merge_cache_arguments(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            token_ids = input_ids
        else:
            token_ids = self.special_token_ids(inputs_embeds)
        if (region_masks is None) != (region_image_index is None):
            raise ValueError("region_masks and region_image_index go together")

        image_tokens = image_outputs = None
        if pixel_values is not None:
            self._check_tile_count(pixel_values, image_grids)
            image_outputs, image_tokens, feature_maps = self._encode_images(pixel_values)
            image_outputs.pooler_output = self._tokens_per_image(image_tokens, image_grids)
            inputs_embeds = self._scatter(inputs_embeds, token_ids, self.config.image_token_id, image_tokens, "<image>")
            if region_masks is not None:
                if self.region_encoder is None or image_grids is None:
                    raise ValueError("regions need a model with a region encoder and the processor's image_grids")
                region_features = self.get_region_features(
                    feature_maps, pixel_values, image_grids, region_masks, region_image_index
                )
                inputs_embeds = self._scatter(
                    inputs_embeds, token_ids, self.config.region_token_id, region_features[:, None], "<region>"
                )
        elif _is_prefill(cache) and (token_ids == self.config.image_token_id).any():
            raise ValueError("the input contains <image> tokens but no pixel_values were given")
        inputs_embeds = self._fill_videos(inputs_embeds, token_ids, pixel_values_videos, _is_prefill(cache))
        if region_masks is None and _is_prefill(cache) and self.config.region_token_id is not None:
            if (token_ids == self.config.region_token_id).any():
                raise ValueError("the input contains <region> tokens but no regions were given")

        if self.super_link is not None:
            inputs_embeds = self.super_link.embed_queries(token_ids, inputs_embeds)
        if _is_prefill(cache):
            warn_past_positions(inputs_embeds.shape[1], self.config.max_text_positions(), "the input")

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            return_dict=True,
            **cache_argument(cache),
            **kwargs,
        )
        return VisionLLMModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **cache_argument(output_cache(outputs)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
            image_hidden_states=image_tokens,
        )

    def _fill_videos(self, inputs_embeds, token_ids, pixel_values_videos, prefill: bool) -> torch.Tensor:
        video_token_id = self.config.video_token_id
        if pixel_values_videos is None:
            if prefill and video_token_id is not None and (token_ids == video_token_id).any():
                raise ValueError("the input contains <video> tokens but no pixel_values_videos were given")
            return inputs_embeds
        if video_token_id is None:
            raise ValueError("pixel_values_videos were given but this model has no <video> token (video_token_id)")
        return self._scatter(inputs_embeds, token_ids, video_token_id, self.get_video_features(pixel_values_videos), "<video>")

    def special_token_ids(self, inputs_embeds: torch.Tensor) -> torch.LongTensor:
        """
        Token ids recovered from embeddings where they matter: the id of `<image>`, `<region>`, `<query>` or a
        routing token where a position holds exactly that token's embedding, -1 elsewhere. This is how inputs
        given as `inputs_embeds` are located (transformers' `get_placeholder_mask` does the same for `<image>`).
        """
        ids = torch.full(inputs_embeds.shape[:-1], -1, dtype=torch.long, device=inputs_embeds.device)
        embeddings = self.get_input_embeddings()
        for token_id in self.config.special_token_ids():
            row = embeddings(torch.tensor(token_id, device=inputs_embeds.device)).to(inputs_embeds.dtype)
            ids[(inputs_embeds == row).all(-1)] = token_id
        return ids

    def _scatter(self, inputs_embeds, input_ids, token_id: int, features: torch.Tensor, what: str) -> torch.Tensor:
        """Write `features` (`(items, tokens_per_item, width)`) into the positions of `token_id`, in order."""
        mask = self._check_placeholders(input_ids, token_id, features, what).unsqueeze(-1).to(inputs_embeds.device)
        return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.device, inputs_embeds.dtype))

    def _check_tile_count(self, pixel_values: torch.Tensor, image_grids: torch.LongTensor | None):
        if image_grids is None:
            return
        global_views = len(image_grids) if self.config.use_global_view else 0
        expected = int(image_grids.prod(dim=-1).sum()) + global_views
        if pixel_values.shape[0] != expected:
            raise ValueError(
                f"pixel_values hold {pixel_values.shape[0]} tiles but image_grids announce {expected} "
                f"({len(image_grids)} images, global view {'on' if self.config.use_global_view else 'off'})"
            )


class VisionLLMForConditionalGeneration(VisionLLMPreTrainedModel, GenerationMixin):
    """[`VisionLLMModel`] with an LM head; generates text with the KV cache, batched with left padding."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}  # as LLaVA: the head of a tensor-parallel LLM

    def __init__(self, config: VisionLLMConfig):
        super().__init__(config)
        self.model = VisionLLMModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.decoders = build_decoders(config)
        self.video_mask_decoder = None  # SAM 2 video: a [SEG] mask on a video's first frame -> a masklet
        if config.video_mask_decoder_config is not None:
            self.video_mask_decoder = AutoModel.from_config(config.video_mask_decoder_config)
        self.post_init()

    def post_init(self):
        super().post_init()
        # Nested models tie weights of their own (SAM inside the mask decoder ties its positional embeddings);
        # transformers collects ties from direct children only, so gather them from every depth.
        self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=True)
        self.tie_weights(recompute_mapping=False)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module):
        self.lm_head = new_embeddings

    def get_image_features(
        self, pixel_values: torch.Tensor, image_grids: torch.LongTensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, image_grids, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_grids: torch.LongTensor | None = None,
        region_masks: torch.Tensor | None = None,
        region_image_index: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        decoder_pixel_values: torch.FloatTensor | None = None,
        super_link_targets: list[list[dict]] | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        decoder_image_index: torch.LongTensor | None = None,
        decoder_pixel_values_videos: torch.FloatTensor | None = None,
        **kwargs,
    ) -> VisionLLMCausalLMOutputWithPast:
        r"""
        Args:
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Target ids for the LM loss; -100 marks positions left out (prompt, image, padding). `<query>`
                positions are always left out.
            decoder_pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, size, size)`, *optional*):
                Per sample the image its decoders read, at their resolution (from the processor: by default the
                sample's last image; a video's first frame).
            decoder_image_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Index of that image in the batch's image list (-1: none). With it, a mask decoder's visual prompts
                are only the regions drawn on that image (in-context examples' regions go to the LLM only).
            decoder_pixel_values_videos (`torch.FloatTensor`, *optional*):
                Every video's frames at the decoders' resolution; read by `generate` (masklets), not by `forward`.
            super_link_targets (`list[list[dict]]`, *optional*):
                Per sample, one target per routing token of its sequence, in order: `{"box": [x1, y1, x2, y2]}`
                (normalised) for a box decoder, `{"mask": (h, w)}` for a mask decoder. With them, the weighted
                decoder losses are added to the LM loss.
            logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
                Compute logits only for the last `logits_to_keep` positions (0 keeps all).

        Example:

        ```python
        >>> from transformers import AutoModel, AutoProcessor
        >>> model = AutoModel.from_pretrained("path/to/checkpoint", trust_remote_code=True)
        >>> processor = AutoProcessor.from_pretrained("path/to/checkpoint", trust_remote_code=True)
        >>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
        >>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        >>> inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        >>> output_ids = model.generate(**inputs, max_new_tokens=20)
        >>> processor.post_process_image_text_to_text(output_ids[:, inputs["input_ids"].shape[1]:])
        ```
        """
        loss_kwargs = {key: kwargs.pop(key) for key in LOSS_KWARGS if key in kwargs}
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_grids=image_grids,
            region_masks=region_masks,
            region_image_index=region_image_index,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=merge_cache_arguments(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            pixel_values_videos=pixel_values_videos,
            return_dict=True,
            **kwargs,
        )
        token_ids = input_ids if input_ids is not None else self.model.special_token_ids(inputs_embeds)
        hidden_states = outputs.last_hidden_state
        occurrences = None
        if self.model.super_link is not None:
            occurrences = self.model.super_link.collect(token_ids, hidden_states)
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states.to(self.lm_head.weight.dtype))

        loss = lm_loss = losses = None
        if labels is not None or "shift_labels" in loss_kwargs:
            labels, loss_kwargs = self._mask_query_targets(token_ids, labels, loss_kwargs)
            loss = lm_loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **loss_kwargs
            )
        if super_link_targets is not None:
            visual_prompts = visual_prompts_by_row(
                token_ids, self.config.region_token_id, region_masks, region_image_index, decoder_image_index
            )
            losses = self._decoder_losses(occurrences or [], super_link_targets, decoder_pixel_values, visual_prompts)
            weighted = sum(self.config.decoder_loss_weights[name] * value for name, value in losses.items())
            loss = weighted if loss is None else loss + weighted
        return VisionLLMCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **cache_argument(output_cache(outputs)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
            image_hidden_states=outputs.image_hidden_states,
            lm_loss=lm_loss,
            decoder_losses=losses,
            super_link_occurrences=occurrences,
        )

    def _mask_query_targets(self, token_ids, labels, loss_kwargs: dict) -> tuple[torch.Tensor | None, dict]:
        """`<query>` positions are never LM targets: in `labels` (position i) or `shift_labels` (position i + 1)."""
        if self.config.query_token_id is None:
            return labels, loss_kwargs
        is_query = token_ids == self.config.query_token_id
        if labels is not None:
            labels = labels.masked_fill(is_query.to(labels.device), -100)
        if loss_kwargs.get("shift_labels") is not None:
            next_is_query = nn.functional.pad(is_query[:, 1:], (0, 1), value=False)
            shift_labels = loss_kwargs["shift_labels"]
            loss_kwargs = {**loss_kwargs, "shift_labels": shift_labels.masked_fill(next_is_query.to(shift_labels.device), -100)}
        return labels, loss_kwargs

    def _decoder_losses(
        self, occurrences, targets: list[list[dict]], decoder_pixel_values, visual_prompts
    ) -> dict[str, torch.Tensor]:
        if self.decoders is None:
            raise ValueError("super_link_targets were given but this model has no decoders")
        for row, row_targets in enumerate(targets):
            found = sum(1 for occurrence in occurrences if occurrence.row == row)
            if found != len(row_targets):
                raise ValueError(f"sample {row} has {found} routing tokens but {len(row_targets)} super_link_targets")
        flat_targets = [target for row_targets in targets for target in row_targets]
        outputs = run_decoders(self.model.super_link, self.decoders, occurrences, decoder_pixel_values, visual_prompts)
        return decoder_losses(self.decoders, outputs, flat_targets)

    def generate(self, *args, **kwargs):
        """
        Plain transformers generation for a chat model; with decoders, generation that runs them on every
        routing token (see `super_link_generation.py`) and returns a `VisionLLMGenerateOutput` with
        `sequences` and per-sample `results` (only `sequences` with `return_dict_in_generate=False`).
        Batches must be padded on the left (the processor's default); a right-padded batch raises. The
        processor's `forced_answer_ids` (a perception `task`) make each row give its task's answer structure.
        """
        input_ids = kwargs.get("input_ids", args[0] if args and torch.is_tensor(args[0]) else None)
        check_left_padding(kwargs.get("attention_mask"))
        eos = (kwargs.get("generation_config") or self.generation_config).eos_token_id
        kwargs = generate_kwargs_with_forced_answers(kwargs, eos[0] if isinstance(eos, (list, tuple)) else eos)
        total = generation_length(input_ids, kwargs, self.generation_config)
        max_positions = self.config.max_text_positions()
        if max_positions is not None and (input_ids is None or input_ids.shape[-1] <= max_positions):
            warn_past_positions(total, max_positions, "the prompt plus max_new_tokens")
        has_visual_input = kwargs.get("pixel_values") is not None or kwargs.get("pixel_values_videos") is not None
        if kwargs.get("assistant_model") is not None and has_visual_input:
            raise ValueError(
                "assisted generation (assistant_model) with images or videos is not supported: the assistant model "
                "never sees them; generate without assistant_model"
            )
        placeholders = self.config.placeholder_token_ids()  # filled by the processor, never generated
        if self.model.super_link is None:
            config = kwargs.get("generation_config") or self.generation_config
            suppressed = kwargs.get("suppress_tokens", config.suppress_tokens) or []
            kwargs["suppress_tokens"] = sorted({*suppressed, *placeholders})
            return super().generate(*args, **kwargs)
        return generate_with_super_link(self, *args, **kwargs)

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """
        Beam search and `num_return_sequences` repeat every input along dim 0, but tiles, grids and regions are laid
        out per image and per region: each sample's own are repeated with it instead (see `image_layout.py`).
        """
        per_image = {}
        visual = model_kwargs.get("pixel_values") is not None or model_kwargs.get("pixel_values_videos") is not None
        if expand_size > 1 and visual:
            per_image = {key: model_kwargs.pop(key) for key in PER_IMAGE_INPUTS if model_kwargs.get(key) is not None}
            has_ids = input_ids is not None and input_ids.shape[-1] > 0  # generate passes (batch, 0) with embeddings
            token_ids = input_ids if has_ids else self.model.special_token_ids(model_kwargs["inputs_embeds"])
            per_image = expand_image_inputs(
                per_image, token_ids, expand_size, image_token_id=self.config.image_token_id,
                region_token_id=self.config.region_token_id, image_seq_length=self.config.image_seq_length,
                use_global_view=self.config.use_global_view, video_token_id=self.config.video_token_id,
            )
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs
        )
        return input_ids, {**model_kwargs, **per_image}

    def prepare_inputs_for_generation(
        self, input_ids, inputs_embeds=None, is_first_iteration: bool | None = False, **kwargs
    ):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        if not is_first_iteration and kwargs.get("use_cache", True):
            # regions are encoded once at prefill, like pixel_values (which transformers drops itself)
            for key in PREFILL_ONLY_INPUTS:
                model_inputs.pop(key, None)
        return model_inputs

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `register_for_auto_class` records one auto class; the image-text-to-text pipeline needs a second entry.
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})  # set by transformers, not declared
            auto_map["AutoModelForImageTextToText"] = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            self.config.auto_map = auto_map
        # Keep parameter names as the modules have them. transformers would otherwise write nested models'
        # legacy names (Swin inside Grounding DINO), which Trainer's resume loads without converting back.
        kwargs.setdefault("save_original_format", False)
        return super().save_pretrained(save_directory, *args, **kwargs)


VisionLLMConfig.register_for_auto_class()
VisionLLMForConditionalGeneration.register_for_auto_class("AutoModel")

__all__ = [
    "VisionLLMCausalLMOutputWithPast",
    "VisionLLMForConditionalGeneration",
    "VisionLLMGenerateOutput",
    "VisionLLMModel",
    "VisionLLMModelOutputWithPast",
    "VisionLLMMultiModalProjector",
    "VisionLLMPreTrainedModel",
]
