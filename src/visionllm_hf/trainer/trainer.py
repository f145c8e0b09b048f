"""`VisionLLMTrainer`: transformers' Trainer with the VisionLLM loss and per-component loss logging."""

from collections import defaultdict

import torch
from transformers import Trainer, TrainerCallback

from .diagnostics import image_token_statistics


class ComponentLossCallback(TrainerCallback):
    """Adds the mean of every loss component since the last log (`lm_loss`, `box_l1`, ...) to each log line."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, components: dict[str, torch.Tensor]):
        for name, value in components.items():
            self.sums[name] += float(value.detach())
            self.counts[name] += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or not self.sums:
            return
        means = {name: round(self.sums[name] / self.counts[name], 6) for name in self.sums}
        logs.update(means)
        if state.log_history:
            state.log_history[-1].update(means)
        self.sums.clear()
        self.counts.clear()


class VisionLLMTrainer(Trainer):
    """
    A `transformers.Trainer` that overrides only `compute_loss`:

    - the loss is the model's (LM loss plus weighted decoder losses);
    - every trainable parameter the batch did not use (a decoder whose routing token is absent, the region
      encoder without regions) enters the loss with weight zero, so DDP and DeepSpeed ZeRO see a gradient for
      every parameter on every rank and never wait for one;
    - the components are logged through `ComponentLossCallback` (put first so printed logs include them), with
      the image tokens' norm ratio and spread (`diagnostics.py`: a model going blind shows there first; not
      under ZeRO-3, whose embedding weights are partitioned outside the forward pass).

    Use `remove_unused_columns=False`: the batches carry images, regions and decoder targets.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.component_losses = ComponentLossCallback()
        self.callback_handler.callbacks.insert(0, self.component_losses)
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        self._zero3 = plugin is not None and plugin.zero_stage == 3

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = outputs.loss + _zero_weighted_unused(model, outputs)
        lm_loss = getattr(outputs, "lm_loss", None)  # VisionLLM v1 outputs carry only `loss`
        components = {"lm_loss": lm_loss} if lm_loss is not None else {}
        components.update(getattr(outputs, "decoder_losses", None) or {})
        if model.training:
            if not self._zero3:
                components.update(image_token_statistics(self.accelerator.unwrap_model(model), inputs, outputs))
            self.component_losses.add(components)
        return (loss, outputs) if return_outputs else loss


def _zero_weighted_unused(model, outputs) -> torch.Tensor:
    """`0 * sum(p)` over trainable parameters outside the graph of this batch's loss."""
    used = set()
    if outputs.loss.grad_fn is not None:
        stack, seen = [outputs.loss.grad_fn], set()
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            variable = getattr(node, "variable", None)
            if variable is not None:
                used.add(id(variable))
            stack.extend(next_node for next_node, _ in node.next_functions)
    unused = [p for p in model.parameters() if p.requires_grad and id(p) not in used]
    if not unused:
        return outputs.loss.new_zeros(())
    return sum(p.sum() for p in unused) * 0.0


__all__ = ["ComponentLossCallback", "VisionLLMTrainer"]
