"""Signs of a blind model, logged during training next to the losses.

A language model learns to ignore its image tokens when they look nothing like text embeddings (far larger or
smaller norms) or when they carry no information (every token of an image alike). Two numbers show both:

- `image_token_norm`: the mean norm of the projected image tokens over the mean norm of the text tokens'
  embeddings in the batch (about 1 when the projector's output is on the scale the LLM reads);
- `image_token_spread`: per image, the mean cosine distance of its tokens from their mean, averaged over images
  (0 when every token of an image is the same vector: nothing to read).
"""

import torch


@torch.no_grad()
def image_token_statistics(model, inputs: dict, outputs) -> dict[str, torch.Tensor]:
    """The two statistics of one batch, `{}` without image tokens (a text-only batch, VisionLLM v1)."""
    image_outputs = getattr(outputs, "image_outputs", None)
    per_image = getattr(image_outputs, "pooler_output", None)
    input_ids = inputs.get("input_ids")
    if not per_image or input_ids is None:
        return {}
    tokens = [t.detach().float() for t in per_image]
    placeholders = {model.config.image_token_id, getattr(model.config, "region_token_id", None)}
    keep = inputs["attention_mask"].bool() if "attention_mask" in inputs else torch.ones_like(input_ids, dtype=torch.bool)
    for token_id in placeholders - {None}:
        keep &= input_ids != token_id
    if not keep.any():
        return {}
    text_norm = model.get_input_embeddings()(input_ids[keep]).float().norm(dim=-1).mean()
    image_norm = torch.cat([t.norm(dim=-1) for t in tokens]).mean()
    spread = torch.stack([
        (1 - torch.cosine_similarity(t, t.mean(0, keepdim=True), dim=-1)).mean() for t in tokens
    ]).mean()
    return {"image_token_norm": image_norm / text_norm.clamp_min(1e-12), "image_token_spread": spread}


__all__ = ["image_token_statistics"]
