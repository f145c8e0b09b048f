"""Add `[GEN]` / `[EDIT]` decoders made of pretrained diffusers components (Stable Diffusion, InstructPix2Pix)."""

import torch
from transformers import AutoTokenizer, CLIPTextModel

from ..modeling.modeling_visionllm import VisionLLMForConditionalGeneration
from .presets import diffusion_decoder_config

ROUTES = {  # routing name -> (decoder type, config field)
    "gen": ("text_to_image", "generation_decoder_config"),
    "edit": ("image_editing", "editing_decoder_config"),
}


def add_diffusion_decoders(
    model: VisionLLMForConditionalGeneration, generation: str | None = None, editing: str | None = None
) -> VisionLLMForConditionalGeneration:
    """
    A copy of `model` with a `[GEN]` decoder from the Stable Diffusion pipeline `generation` and/or an `[EDIT]`
    decoder from the InstructPix2Pix pipeline `editing` (hub ids or folders in diffusers' layout: `unet/`,
    `vae/`, `scheduler/`, optionally `text_encoder/` + `tokenizer/`). The UNet and VAE weights are loaded; the
    text encoder's features of the empty prompt become the unconditional embedding used for guidance. The
    super-link queries, projections and Q-Former mappers are new; every other weight is `model`'s.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    sources = {name: source for name, source in (("gen", generation), ("edit", editing)) if source is not None}
    config = model.config.to_dict()
    config["routing_decoders"] = dict(config.get("routing_decoders") or {})
    for name, source in sources.items():
        decoder_type, field = ROUTES[name]
        unet = UNet2DConditionModel.load_config(source, subfolder="unet")
        vae = AutoencoderKL.load_config(source, subfolder="vae")
        scheduler = DDPMScheduler.load_config(source, subfolder="scheduler")
        image_size = unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
        config[field] = diffusion_decoder_config(unet, vae, scheduler, image_size)
        config["routing_decoders"][name] = decoder_type
    combined = VisionLLMForConditionalGeneration(type(model.config).from_dict(config))
    missing, unexpected = combined.load_state_dict(model.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"weights of the model have no place in the combined one: {unexpected[:5]}")
    combined.generation_config = model.generation_config
    for name, source in sources.items():
        decoder = combined.decoders[name]
        decoder.unet.load_state_dict(UNet2DConditionModel.from_pretrained(source, subfolder="unet").state_dict())
        decoder.vae.load_state_dict(AutoencoderKL.from_pretrained(source, subfolder="vae").state_dict())
        try:
            captions = CaptionFeatures(source, length=decoder.null_prompt_embeds.shape[0])
        except (OSError, ValueError):  # a pipeline folder without text encoder: the null embedding stays zero
            continue
        with torch.no_grad():
            decoder.null_prompt_embeds.copy_(captions([""])[0])
    return combined


class CaptionFeatures:
    """
    Stable Diffusion's text-encoder features of captions, `(n, length, width)`: the targets of the `[GEN]` /
    `[EDIT]` text-feature loss, and (for `""`) the unconditional embedding.

    Arguments:
        source (`str`): a diffusers pipeline (hub id or folder) with `tokenizer/` and `text_encoder/`.
        length (`int`, defaults to 77): tokens per caption (padded or truncated).
    """

    def __init__(self, source: str, length: int = 77):
        self.tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder").eval()
        self.length = length

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            captions, padding="max_length", max_length=self.length, truncation=True, return_tensors="pt"
        ).input_ids
        return self.text_encoder(ids).last_hidden_state


__all__ = ["CaptionFeatures", "add_diffusion_decoders"]
