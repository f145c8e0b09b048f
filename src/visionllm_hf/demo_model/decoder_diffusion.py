"""`[GEN]` text-to-image and `[EDIT]` image-editing decoders on diffusers (VisionLLM v2, paper 002 section 3.2,
appendix B.2).

The routing token's 64 super-link states, projected by the super link's MLP, are read by a small Q-Former
(transformers' `Blip2QFormerModel`) with 77 learnable queries; its outputs, mapped to the UNet's cross-attention
width, are Stable Diffusion's `prompt_embeds`, so SD's text encoder is bypassed. Text-to-image uses a
`UNet2DConditionModel` with 4 input channels; editing an InstructPix2Pix UNet with 8, the input image's latents
concatenated to the noisy latents. The VAE is frozen.

Training: noise-prediction MSE on VAE latents of the target image, plus, when a target carries `text_embeds`
(SD's text-encoder features of the caption), MSE between the mapped `prompt_embeds` and them. The condition is
dropped at `condition_dropout` (replaced by `null_prompt_embeds`; for editing the input image is dropped
independently at the same rate), which is what classifier-free guidance needs at inference.

Inference runs diffusers' `StableDiffusionPipeline` / `StableDiffusionInstructPix2PixPipeline` with
`prompt_embeds` and `negative_prompt_embeds` (the null embedding), built on the fly around these modules.

This file ships with every checkpoint (``trust_remote_code``). diffusers is imported inside a try block, so a
checkpoint without generation decoders loads where diffusers is not installed.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

try:
    import diffusers
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
except ImportError:
    diffusers = None

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_OPTIONS = {"num_inference_steps": 50, "guidance_scale": 7.5, "image_guidance_scale": 1.5, "seed": 0}


class PromptMapper(nn.Module):
    """Super-link states `(n, tokens, width)` -> Q-Former with learnable queries -> `(n, queries, output_width)`."""

    def __init__(self, qformer_config: Blip2QFormerConfig, num_queries: int, output_width: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, qformer_config.hidden_size) * 0.02)
        self.qformer = Blip2QFormerModel(qformer_config)
        self.output = nn.Linear(qformer_config.hidden_size, output_width)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        queries = self.queries[None].expand(len(states), -1, -1).to(states.dtype)
        mapped = self.qformer(query_embeds=queries, encoder_hidden_states=states).last_hidden_state
        return self.output(mapped)


class DiffusionImageDecoder(nn.Module):
    """
    Arguments:
        diffusion_config (`dict`): `unet`, `vae` and `scheduler` (diffusers config dicts; the scheduler's
            `_class_name` picks the inference scheduler, training adds noise with `DDPMScheduler` on the same
            config), `mapper` (`Blip2QFormerConfig` keyword arguments; its `encoder_hidden_size` is the width
            the super link projects to), `num_prompt_tokens` (77), `image_size` (side of generated images in
            pixels) and `condition_dropout` (rate of dropping the condition in training).
        editing (`bool`): InstructPix2Pix editing (the UNet reads 8 channels) instead of text-to-image.
    """

    makes_images = True

    def __init__(self, *, diffusion_config: dict, editing: bool):
        super().__init__()
        if diffusers is None:
            raise ImportError("the [GEN]/[EDIT] decoders need diffusers: pip install diffusers")
        config = dict(diffusion_config)
        missing = [key for key in ("unet", "vae", "scheduler", "mapper", "image_size") if key not in config]
        if missing:
            raise ValueError(f"the diffusion decoder config has no {missing}")
        self.editing = editing
        self.needs_image = editing
        self.image_size = int(config["image_size"])
        self.condition_dropout = float(config.get("condition_dropout", 0.05))
        self.scheduler_config = dict(config["scheduler"])
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)  # adds training noise
        self.unet = UNet2DConditionModel.from_config(config["unet"])
        self.vae = AutoencoderKL.from_config(config["vae"])
        self.vae.requires_grad_(False)  # frozen, as in VisionLLM v2 and InstructPix2Pix training
        latent_channels = self.vae.config.latent_channels
        expected = 2 * latent_channels if editing else latent_channels
        if self.unet.config.in_channels != expected:
            kind = "an editing (InstructPix2Pix)" if editing else "a text-to-image"
            raise ValueError(
                f"{kind} UNet needs {expected} input channels for {latent_channels} latent channels, "
                f"the config has {self.unet.config.in_channels}"
            )
        mapper_config = Blip2QFormerConfig(**config["mapper"])
        self.input_width = mapper_config.encoder_hidden_size
        num_tokens = int(config.get("num_prompt_tokens", 77))
        width = self.unet.config.cross_attention_dim
        self.mapper = PromptMapper(mapper_config, num_tokens, width)
        # The unconditional embedding for guidance; a build from pretrained SD stores its text encoder's "" here.
        self.register_buffer("null_prompt_embeds", torch.zeros(num_tokens, width))

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Decoder images (ImageNet-normalised) -> the edit inputs in [0, 1] at `image_size`."""
        mean = torch.tensor(IMAGENET_MEAN, device=pixel_values.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=pixel_values.device).view(1, 3, 1, 1)
        images = (pixel_values.float() * std + mean).clamp(0, 1)
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            size = (self.image_size, self.image_size)
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
        return images

    def forward(self, prompts: torch.Tensor, image_features: torch.Tensor | None, rows: torch.LongTensor) -> dict:
        """`{"prompt_embeds": (n, 77, width), "rows"}`, plus `"input_images"` (n, 3, s, s) when editing."""
        predictions = {"prompt_embeds": self.mapper(prompts), "rows": rows}
        if self.editing:
            predictions["input_images"] = image_features[rows]
        return predictions

    def compute_loss(self, predictions: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """
        Targets: `{"image": (3, h, w) in [0, 1]}` (the image to generate, or the edited image), optionally
        `"text_embeds"` `(77, width)`: SD's text-encoder features of the caption.
        """
        prefix = "edit" if self.editing else "gen"
        prompt_embeds = predictions["prompt_embeds"]
        unet_dtype = self.unet.dtype
        target_images = torch.stack([self._target_pixels(target, prompt_embeds.device) for target in targets])
        latents = self._latents(target_images, sample=True)
        noise = torch.randn_like(latents)
        scheduler = self.noise_scheduler
        steps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), device=latents.device)
        noisy = scheduler.add_noise(latents, noise, steps)
        condition = prompt_embeds
        if self.training and self.condition_dropout > 0:
            dropped = torch.rand(len(condition), device=condition.device) < self.condition_dropout
            condition = torch.where(dropped[:, None, None], self.null_prompt_embeds.to(condition), condition)
        if self.editing:
            image_latents = self._latents(predictions["input_images"], sample=False)
            if self.training and self.condition_dropout > 0:
                kept = torch.rand(len(image_latents), device=image_latents.device) >= self.condition_dropout
                image_latents = image_latents * kept[:, None, None, None]
            noisy = torch.cat([noisy, image_latents], dim=1)
        predicted = self.unet(noisy.to(unet_dtype), steps, encoder_hidden_states=condition.to(unet_dtype)).sample
        if scheduler.config.prediction_type == "v_prediction":
            objective = scheduler.get_velocity(latents, noise, steps)
        else:
            objective = noise
        losses = {f"{prefix}_noise_mse": F.mse_loss(predicted.float(), objective.float())}
        with_text = [index for index, target in enumerate(targets) if target.get("text_embeds") is not None]
        if with_text:
            text = torch.stack([torch.as_tensor(targets[i]["text_embeds"]) for i in with_text]).to(prompt_embeds)
            losses[f"{prefix}_text_mse"] = F.mse_loss(prompt_embeds[with_text], text)
        return losses

    def _target_pixels(self, target: dict, device) -> torch.Tensor:
        if "image" not in target:
            raise ValueError("a [GEN]/[EDIT] target needs 'image': the (3, h, w) image in [0, 1] to produce")
        image = torch.as_tensor(target["image"], dtype=torch.float32, device=device)
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"a [GEN]/[EDIT] target image must be (3, h, w), got {tuple(image.shape)}")
        size = (self.image_size, self.image_size)
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        return image.clamp(0, 1)

    @torch.no_grad()
    def _latents(self, images: torch.Tensor, sample: bool) -> torch.Tensor:
        """
        VAE latents of `[0, 1]` images: the target's sampled and scaled (SD training), the edit input's the
        unscaled mode (what InstructPix2Pix and its pipeline use).
        """
        distribution = self.vae.encode((images * 2 - 1).to(self.vae.dtype)).latent_dist
        latents = distribution.sample() if sample else distribution.mode()
        return latents * (self.vae.config.scaling_factor if sample else 1.0)

    def pipeline(self):
        """The diffusers pipeline around these modules (no text encoder, no safety checker)."""
        scheduler_class = getattr(diffusers, self.scheduler_config.get("_class_name", "PNDMScheduler"))
        pipeline_class = StableDiffusionInstructPix2PixPipeline if self.editing else StableDiffusionPipeline
        pipeline = pipeline_class(
            vae=self.vae,
            text_encoder=None,
            tokenizer=None,
            unet=self.unet,
            scheduler=scheduler_class.from_config(self.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def results(self, predictions: dict, **options) -> list[dict]:
        """
        One PIL image per occurrence. Options: `num_inference_steps`, `guidance_scale`, `image_guidance_scale`
        (editing) and `seed`; an occurrence's noise is seeded with `seed` plus the number of earlier [GEN]/[EDIT]
        occurrences of its sample, so a sample gets the same image alone or in any batch.
        """
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise TypeError(f"unknown image generation options {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}")
        options = {**DEFAULT_OPTIONS, **{key: value for key, value in options.items() if value is not None}}
        prompt_embeds = predictions["prompt_embeds"].to(self.unet.dtype)
        rows = predictions["rows"].tolist()
        generators = [
            torch.Generator().manual_seed(int(options["seed"]) + rows[:index].count(row))
            for index, row in enumerate(rows)
        ]
        call = {
            "prompt_embeds": prompt_embeds,
            "negative_prompt_embeds": self.null_prompt_embeds.to(prompt_embeds).expand_as(prompt_embeds),
            "num_inference_steps": int(options["num_inference_steps"]),
            "guidance_scale": float(options["guidance_scale"]),
            "generator": generators,
        }
        if self.editing:
            call.update(image=predictions["input_images"], image_guidance_scale=float(options["image_guidance_scale"]))
        else:
            call.update(height=self.image_size, width=self.image_size)
        images = self.pipeline()(**call).images
        return [{"images": [image]} for image in images]


__all__ = ["DiffusionImageDecoder", "PromptMapper"]
