"""Model cards rendered from `template.md` through `huggingface_hub.ModelCard`, offline."""

from importlib import metadata, resources

from huggingface_hub import ModelCard, ModelCardData
from packaging.requirements import Requirement

from ..processing.special_tokens import ROUTING_TOKENS


def transformers_range() -> str:
    """The transformers versions visionllm-hf declares (setup.py), e.g. `>=5.23,<6`, read from the installed metadata."""
    for line in metadata.requires("visionllm-hf") or []:
        requirement = Requirement(line)
        if requirement.name == "transformers" and requirement.marker is None:
            return ",".join(sorted(map(str, requirement.specifier), key=lambda bound: not bound.startswith(">")))
    raise RuntimeError("visionllm-hf's metadata declares no transformers requirement")


def render_model_card(
    model,
    *,
    model_name: str,
    repo_id: str | None = None,
    stages: list[dict] | None = None,
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    command: str | None = None,
    training_time: str | None = None,
) -> ModelCard:
    """
    A model card for a VisionLLM model: components and their sizes, training stages, data, metrics and a usage
    snippet. `stages` holds dicts with `name`, `description`, `steps`, `learning_rates` and `lora`.
    """
    from ..builder.checkpoint import count_parameters

    config = model.config
    if config.model_type == "visionllm_v1":
        detector = config.detector_config
        vision_tower = f"language-guided {detector.model_type} ({detector.backbone_config.model_type} backbone)"
        decoders = ""
    else:
        vision_tower = config.vision_config.model_type
        decoders = ", ".join(f"`{ROUTING_TOKENS[name]}` -> {kind}" for name, kind in config.routing_decoders.items())
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=["visionllm", "vision-language", "custom_code"],
        datasets=None,
        license="apache-2.0",
    )
    template = resources.files(__package__).joinpath("template.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=model_name,
        repo_id=repo_id or model_name,
        vision_tower=vision_tower,
        language_model=config.text_config.model_type,
        decoders=decoders,
        parameters=count_parameters(model),
        stages=stages or [],
        datasets=datasets or [],
        metrics=metrics or {},
        command=command,
        training_time=training_time,
        transformers_range=transformers_range(),
    )


__all__ = ["render_model_card", "transformers_range"]
