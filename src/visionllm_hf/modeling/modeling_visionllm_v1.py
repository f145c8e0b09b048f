"""VisionLLM (v1): language-guided image tokens in an LLM, location / class tokens, output-format-as-query.

Image tokens (`LanguageGuidedImageTokenizer`, M per image) are projected to the LLM width, their locations added
through a linear embedding, and written into the M `<image>` slots of the prompt. Captioning and VQA decode
autoregressively as any causal LM (`generate`). Perception decodes in parallel: `decode_objects` appends, for each
of the M image tokens, a slot of format queries (`<cls> <x1> <y1> <x2> <y2>` for boxes, `<cls>` and N boundary
points for polygons) embedded as the format token plus that image token's embedding. Every slot attends to the
whole prompt and causally to its own queries, never to other slots, so one forward decodes every object, and the
result equals decoding each slot alone after the prompt (tested). Each query's own output is its field: a class
token (or `<c-none>`) for `<cls>`, a location token `<pi>` for a coordinate, meaning the owning image token's
location plus `i / R` of the image side. Training matches slots to objects (Hungarian, scipy) and applies
cross-entropy to the matched fields and `<c-none>` to the rest.

This file ships with every v1 checkpoint (``trust_remote_code``): it imports only torch, scipy, transformers and
its siblings.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    BaseModelOutputWithPooling,
    CausalLMOutputWithPast,
    ModelOutput,
)
from transformers.utils.generic import can_return_tuple

from .configuration_visionllm_v1 import MAX_BOUNDARY_POINTS, VisionLLMv1Config
from .image_tokenizer_v1 import LanguageGuidedImageTokenizer
from .input_checks import check_left_padding, weights_file_errors
from .transformers_compat import LOSS_KWARGS, cache_argument, merge_cache_arguments, output_cache


def encode_location(coordinates: torch.Tensor, references: torch.Tensor, location_range: int) -> torch.LongTensor:
    """Normalised coordinates -> location offsets `i` in [-R, R] from their references (nearest bin)."""
    return ((coordinates - references) * location_range).round().clamp(-location_range, location_range).long()


def decode_location(offsets: torch.Tensor, references: torch.Tensor, location_range: int) -> torch.Tensor:
    """Location offsets `i` -> normalised coordinates `reference + i / R`."""
    return references + offsets.to(references.dtype) / location_range


def format_query_ids(config: VisionLLMv1Config, num_fields: int) -> list[int]:
    """`<cls>` then `<x1> <y1> <x2> <y2> ...`: the format queries of one slot with `num_fields` fields."""
    points = (num_fields - 1) // 2
    if num_fields < 3 or (num_fields - 1) % 2 or points > MAX_BOUNDARY_POINTS:
        raise ValueError(
            f"a slot holds <cls> and 1 to {MAX_BOUNDARY_POINTS} (x, y) points, so 3 to {1 + 2 * MAX_BOUNDARY_POINTS} "
            f"odd fields; got {num_fields}"
        )
    return [config.cls_query_token_id] + [config.coordinate_query_start_id + j for j in range(num_fields - 1)]


@dataclass
class VisionLLMv1ObjectOutput(ModelOutput):
    """
    Output of `decode_objects`.

    Args:
        logits (`torch.FloatTensor` of shape `(batch_size, M, num_fields, vocab_size)`): each slot's field scores.
        locations (`torch.FloatTensor` of shape `(batch_size, M, 2)`): each image token's location (x, y).
        objectness (`torch.FloatTensor` of shape `(batch_size, M)`): the tokenizer's objectness logits.
        loss (`torch.FloatTensor`, *optional*): decoder + tokenizer loss when targets were given.
    """

    logits: torch.FloatTensor | None = None
    locations: torch.FloatTensor | None = None
    objectness: torch.FloatTensor | None = None
    loss: torch.FloatTensor | None = None


class VisionLLMv1PreTrainedModel(PreTrainedModel):
    config: VisionLLMv1Config
    config_class = VisionLLMv1Config
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _no_split_modules = ["LanguageGuidedImageTokenizer"]
    _supports_sdpa = True
    _supports_attention_backend = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        with weights_file_errors(pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


class VisionLLMv1Model(VisionLLMv1PreTrainedModel):
    """The language-guided image tokenizer, the projector and the LLM backbone, without the LM head."""

    def __init__(self, config: VisionLLMv1Config):
        super().__init__(config)
        width, hidden = config.detector_config.d_model, config.text_config.hidden_size
        self.image_tokenizer = LanguageGuidedImageTokenizer(
            detector_config=config.detector_config, prompt_encoder_config=config.prompt_encoder_config
        )
        self.projector = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.location_embedding = nn.Linear(2, hidden)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def encode_images(self, pixel_values, prompt_input_ids, prompt_attention_mask):
        """`(image embeddings in the LLM width (b, M, h), locations (b, M, 2), objectness (b, M))`."""
        states, centres, objectness = self.image_tokenizer(pixel_values, prompt_input_ids, prompt_attention_mask)
        embeddings = self.projector(states) + self.location_embedding(centres)
        return embeddings, centres, objectness

    @can_return_tuple
    def get_image_features(
        self, pixel_values, prompt_input_ids, prompt_attention_mask, **kwargs
    ) -> BaseModelOutputWithPooling:
        """
        The language-guided image tokens: `last_hidden_state` holds the tokenizer's M query states per image
        `(batch, M, d_model)`, `pooler_output` per image its M tokens in the LLM width `(M, hidden)` (location
        embedding added), as they fill the `<image>` positions.
        """
        states, centres, _ = self.image_tokenizer(pixel_values, prompt_input_ids, prompt_attention_mask)
        embeddings = self.projector(states) + self.location_embedding(centres)
        return BaseModelOutputWithPooling(last_hidden_state=states, pooler_output=list(embeddings))

    def prompt_embeddings(self, input_ids, image_embeddings):
        """The prompt's token embeddings with the image tokens written into its `<image>` positions."""
        embeds = self.get_input_embeddings()(input_ids)
        return self._write_image_tokens(embeds, input_ids == self.config.image_token_id, image_embeddings)

    def _write_image_tokens(self, embeds, is_image, image_embeddings):
        expected = image_embeddings.shape[0] * image_embeddings.shape[1]
        if int(is_image.sum()) != expected:
            raise ValueError(
                f"the input holds {int(is_image.sum())} <image> tokens but the images give {expected} image tokens "
                f"({image_embeddings.shape[1]} each); build inputs with the VisionLLM v1 processor"
            )
        return embeds.masked_scatter(is_image[..., None], image_embeddings.to(embeds.dtype))

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        prompt_input_ids: torch.LongTensor | None = None,
        prompt_attention_mask: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """The LLM's states over the prompt, its `<image>` positions filled with the language-guided image tokens."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        embeddings = self.get_input_embeddings()
        if inputs_embeds is None:
            inputs_embeds, is_image = embeddings(input_ids), input_ids == self.config.image_token_id
        else:  # located by their embedding, as transformers' get_placeholder_mask does
            image_row = embeddings(torch.tensor(self.config.image_token_id, device=inputs_embeds.device))
            is_image = (inputs_embeds == image_row.to(inputs_embeds.dtype)).all(-1)
        if pixel_values is not None:
            image_embeddings, _, _ = self.encode_images(pixel_values, prompt_input_ids, prompt_attention_mask)
            inputs_embeds = self._write_image_tokens(inputs_embeds, is_image, image_embeddings)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            return_dict=True,
            **cache_argument(merge_cache_arguments(cache, past_key_values)),
            **kwargs,
        )


class VisionLLMv1ForConditionalGeneration(VisionLLMv1PreTrainedModel, GenerationMixin):
    """[`VisionLLMv1Model`] with the LM head: captioning and VQA through `generate`, objects through `decode_objects`."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: VisionLLMv1Config):
        super().__init__(config)
        self.model = VisionLLMv1Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def post_init(self):
        super().post_init()
        self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=True)
        self.tie_weights(recompute_mapping=False)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def encode_images(self, pixel_values, prompt_input_ids, prompt_attention_mask):
        return self.model.encode_images(pixel_values, prompt_input_ids, prompt_attention_mask)

    def get_image_features(self, pixel_values, prompt_input_ids, prompt_attention_mask, **kwargs):
        return self.model.get_image_features(pixel_values, prompt_input_ids, prompt_attention_mask, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        prompt_input_ids: torch.LongTensor | None = None,
        prompt_attention_mask: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        object_targets: list[dict] | None = None,
        num_fields: int = 5,
        past_key_values: Cache | None = None,
        **kwargs,
    ):
        r"""
        The causal-LM path (captioning, VQA, and the LM loss on `labels`); with `object_targets`, the parallel
        object decoding of `decode_objects` and its loss instead (so a `Trainer` trains both through `forward`).

        Args:
            pixel_values (`(batch_size, 3, image_size, image_size)`): one image per sample (the processor's).
            prompt_input_ids, prompt_attention_mask: the instruction for the tokenizer's BERT (the processor's).
        """
        if object_targets is not None:
            return self.decode_objects(
                input_ids, pixel_values, prompt_input_ids, prompt_attention_mask, attention_mask, num_fields, object_targets
            )
        loss_kwargs = {key: kwargs.pop(key) for key in LOSS_KWARGS if key in kwargs}
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            prompt_input_ids=prompt_input_ids,
            prompt_attention_mask=prompt_attention_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=merge_cache_arguments(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None or "shift_labels" in loss_kwargs:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **loss_kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **cache_argument(output_cache(outputs)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def generate(self, *args, **kwargs):
        """transformers' generation; batches must be padded on the left (the processor's default), else it raises."""
        check_left_padding(kwargs.get("attention_mask"))
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(
        self, input_ids, inputs_embeds=None, is_first_iteration: bool | None = False, **kwargs
    ):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in ("pixel_values", "prompt_input_ids", "prompt_attention_mask"):
                model_inputs.pop(key, None)
        return model_inputs

    def decode_objects(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        prompt_input_ids: torch.LongTensor,
        prompt_attention_mask: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        num_fields: int = 5,
        object_targets: list[dict] | None = None,
    ) -> VisionLLMv1ObjectOutput:
        """
        Output-format-as-query: every slot's fields in one forward.

        Args:
            input_ids: the instruction with its M `<image>` tokens, left padded (the processor's).
            num_fields (`int`, defaults to 5): `<cls> <x1> <y1> <x2> <y2>` for boxes; `1 + 2N` for N boundary
                points (N from 8 to 24 in the paper).
            object_targets (`list[dict]`, *optional*): per sample `{"classes": (n,) class indices, "points":
                (n, num_fields - 1) normalised coordinates (x1, y1, x2, y2, ...)}`; gives `loss`.
        """
        image_embeddings, locations, objectness = self.encode_images(pixel_values, prompt_input_ids, prompt_attention_mask)
        prefix = self.model.prompt_embeddings(input_ids, image_embeddings)
        batch, length = input_ids.shape
        slots = image_embeddings.shape[1]
        queries = torch.tensor(format_query_ids(self.config, num_fields), device=input_ids.device)
        slot_embeds = self.get_input_embeddings()(queries)[None, None] + image_embeddings[:, :, None]
        embeds = torch.cat([prefix, slot_embeds.flatten(1, 2).to(prefix.dtype)], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask, positions = _slot_attention(attention_mask, slots, num_fields)
        hidden = self.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
        logits = self.lm_head(hidden[:, length:]).view(batch, slots, num_fields, -1)
        loss = None
        if object_targets is not None:
            loss = self.object_loss(logits, locations, object_targets)
            centres = [_centres(target["points"]).to(locations) for target in object_targets]
            loss = loss + self.config.tokenizer_loss_weight * LanguageGuidedImageTokenizer.loss(locations, objectness, centres)
        return VisionLLMv1ObjectOutput(logits=logits, locations=locations, objectness=objectness, loss=loss)

    def object_loss(self, logits: torch.Tensor, locations: torch.Tensor, targets: list[dict]) -> torch.Tensor:
        """Hungarian matching of slots to objects, then cross-entropy on class and location tokens."""
        config = self.config
        class_ids = config.class_token_start_id + torch.arange(config.num_classes, device=logits.device)
        location_ids = config.location_token_start_id + torch.arange(config.num_location_bins, device=logits.device)
        references = locations.repeat(1, 1, (logits.shape[2] - 1) // 2)  # (b, M, 2N): x, y per point
        class_logits = logits[:, :, 0, torch.cat([class_ids, class_ids.new_tensor([config.no_object_token_id])])]
        location_logits = logits[:, :, 1:][..., location_ids]
        terms, count = [], 0
        for row, target in enumerate(targets):
            classes = torch.as_tensor(target["classes"], device=logits.device).long()
            points = torch.as_tensor(target["points"], device=logits.device, dtype=locations.dtype)
            class_target = torch.full((logits.shape[1],), config.num_classes, device=logits.device)
            if len(classes):
                offsets = encode_location(points[None], references[row][:, None], config.location_range)  # (M, n, 2N)
                bins = offsets + config.location_range
                log_probs = location_logits[row].log_softmax(-1).detach()  # (M, 2N, bins)
                location_cost = -log_probs[:, None].expand(-1, len(classes), -1, -1).gather(-1, bins[..., None])[..., 0].mean(-1)
                class_cost = -class_logits[row].log_softmax(-1).detach()[:, classes]
                slot_index, object_index = linear_sum_assignment((class_cost + location_cost).float().cpu().numpy())
                slot_index = torch.as_tensor(slot_index, device=logits.device)
                object_index = torch.as_tensor(object_index, device=logits.device)
                class_target[slot_index] = classes[object_index]
                matched_bins = bins[slot_index, object_index]  # (k, 2N)
                terms.append(F.cross_entropy(location_logits[row, slot_index].flatten(0, 1), matched_bins.flatten(), reduction="sum"))
                count += matched_bins.numel()
            terms.append(F.cross_entropy(class_logits[row], class_target, reduction="sum"))
            count += logits.shape[1]
        return sum(terms) / max(count, 1)


def _centres(points) -> torch.Tensor:
    """Box or polygon points `(n, 2N)` -> their centres `(n, 2)` (mean of the xs and of the ys)."""
    points = torch.as_tensor(points, dtype=torch.float32)
    if not len(points):
        return points.new_zeros(0, 2)
    return points.view(len(points), -1, 2).mean(1)


def _slot_attention(attention_mask: torch.Tensor, slots: int, fields: int) -> tuple[torch.Tensor, torch.LongTensor]:
    """
    The 4D boolean mask and position ids of prompt + slots: the prompt is causal over its real tokens; a slot
    query sees every real prompt token and the earlier queries of its own slot; slot positions continue from
    the prompt's length, the same for every slot.
    """
    batch, length = attention_mask.shape
    total = length + slots * fields
    real = attention_mask.bool()
    causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
    mask = torch.zeros(batch, total, total, dtype=torch.bool, device=real.device)
    mask[:, :length, :length] = causal[None] & real[:, None, :]
    mask[:, length:, :length] = real[:, None, :]
    within = torch.ones(fields, fields, dtype=torch.bool, device=real.device).tril()
    mask[:, length:, length:] = torch.block_diag(*[within] * slots)[None]
    diagonal = torch.arange(total, device=real.device)
    mask[:, diagonal, diagonal] = True  # padding rows attend to themselves (their outputs are never used)
    prompt_positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    slot_positions = attention_mask.long().sum(-1, keepdim=True) + torch.arange(fields, device=real.device).repeat(slots)
    return mask[:, None], torch.cat([prompt_positions, slot_positions], dim=1)


VisionLLMv1Config.register_for_auto_class()
VisionLLMv1ForConditionalGeneration.register_for_auto_class("AutoModel")

__all__ = [
    "VisionLLMv1ForConditionalGeneration",
    "VisionLLMv1Model",
    "VisionLLMv1ObjectOutput",
    "VisionLLMv1PreTrainedModel",
    "decode_location",
    "encode_location",
    "format_query_ids",
]
