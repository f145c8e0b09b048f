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
        null = empty_prompt_features(source, decoder.null_prompt_embeds.shape[0])
        if null is not None:
            decoder.null_prompt_embeds.copy_(null)
    return combined


@torch.no_grad()
def empty_prompt_features(source: str, length: int) -> torch.Tensor | None:
    """The pipeline's text-encoder features of `""` padded to `length` tokens, or None without a text encoder."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder")
    except (OSError, ValueError):
        return None
    ids = tokenizer("", padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids).last_hidden_state[0]


__all__ = ["add_diffusion_decoders", "empty_prompt_features"]
