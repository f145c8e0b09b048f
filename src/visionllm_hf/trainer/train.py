"""`visionllm-hf train`: fine-tune a checkpoint on users' data with a stage preset.

    visionllm-hf train --model CHECKPOINT --stage v2-decoders --output_dir out --max_steps 1000 \
        --data coco=annotations.json,images=DIR,task=detection conversation=llava.json,images=DIR

Every `TrainingArguments` flag works (`--deepspeed zero2` or `zero3` picks the configs shipped in the package).
`--per_device_train_batch_size` is the number of samples per device batch; each batch comes from one data
source (task group).
"""

import dataclasses
import shlex
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from huggingface_hub import HfApi
from transformers import AutoConfig, HfArgumentParser, TrainerCallback, TrainingArguments

from ..builder.checkpoint import save_checkpoint
from ..builder.diffusion import CaptionFeatures
from ..model_cards import render_model_card
from ..modeling import VisionLLMForConditionalGeneration, VisionLLMv1ForConditionalGeneration
from ..processing import VisionLLMProcessor
from ..processing.processing_visionllm_v1 import VisionLLMv1Processor
from .collator import VisionLLMCollator
from .data import CocoSource, ConversationSource, GenerationSource, MixedTaskDataset, ReferringSource
from .lora import save_adapter
from .stages import STAGES, apply_stage, build_optimizer
from .trainer import VisionLLMTrainer
from .v1_data import V1DetectionSource, VisionLLMv1Collator

SOURCES = {
    "conversation": ConversationSource,
    "coco": CocoSource,
    "referring": ReferringSource,
    "generation": GenerationSource,
    "v1detection": V1DetectionSource,  # VisionLLM v1 checkpoints only
}


@dataclass
class VisionLLMTrainArguments:
    model: str = field(metadata={"help": "checkpoint folder (or hub id) to start from"})
    data: list[str] = field(
        metadata={
            "help": "one or more FORMAT=PATH[,images=DIR][,task=TASK][,ratio=R] after a single --data; "
            "FORMAT: conversation, coco, referring, generation (VisionLLM v2 checkpoints), v1detection (v1)"
        }
    )
    stage: str = field(default="v2-decoders", metadata={"help": f"one of {sorted(STAGES)}"})
    samples_per_epoch: int | None = field(default=None, metadata={"help": "batches per epoch (default: data size)"})
    max_length: int | None = field(default=None, metadata={"help": "truncate longer training sequences"})
    learning_rate_scale: float = field(
        default=1.0, metadata={"help": "multiplies every learning rate of the stage preset (tiny models, short runs)"}
    )
    save_merged: bool = field(default=True, metadata={"help": "with LoRA, also save the merged full model"})
    caption_encoder: str | None = field(
        default=None,
        metadata={
            "help": "Stable Diffusion pipeline (hub id or folder) whose text encoder gives the targets of the "
            "[GEN]/[EDIT] text-feature loss"
        },
    )


def parse_data_spec(spec: str):
    """`coco=ann.json,images=dir,task=detection,ratio=2` -> (source, ratio)."""
    first, *options = spec.split(",")
    kind, _, path = first.partition("=")
    if kind not in SOURCES or not path:
        raise ValueError(f"data spec '{spec}' must start with one of {sorted(SOURCES)}=PATH")
    settings = dict(option.split("=", 1) for option in options)
    ratio = float(settings.pop("ratio", 1.0))
    if kind in ("coco", "v1detection"):
        if "images" not in settings:
            raise ValueError(f"data spec '{spec}': COCO data needs images=DIR")
        source = SOURCES[kind](path, settings.pop("images"), **settings)
    else:
        source = SOURCES[kind](path, settings.pop("images", None), **settings)
    return source, ratio


def make_parser() -> HfArgumentParser:
    parser = HfArgumentParser((VisionLLMTrainArguments, TrainingArguments))
    parser.set_defaults(
        remove_unused_columns=False,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        weight_decay=0.0,
        report_to="none",
        # every trainable parameter gets a (zero-weighted) gradient each step, see VisionLLMTrainer
        ddp_find_unused_parameters=False,
    )
    return parser


def shipped_deepspeed_config(name: str | None) -> str | None:
    """`zero2` / `zero3` -> the JSON shipped in the package; anything else is passed through."""
    if name in ("zero2", "zero3"):
        return str(resources.files(__package__).joinpath("deepspeed", f"{name}.json"))
    return name


class ModelCardCallback(TrainerCallback):
    """Writes the model card into every checkpoint the Trainer saves."""

    def __init__(self, card_kwargs: dict, model):
        self.card_kwargs, self.model = card_kwargs, model

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            card_model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            render_model_card(card_model, **self.card_kwargs(state)).save(folder / "README.md")


def train(argv: list[str]) -> Path:
    options, training_args = make_parser().parse_args_into_dataclasses(args=argv)
    if training_args.deepspeed:
        training_args = dataclasses.replace(training_args, deepspeed=shipped_deepspeed_config(training_args.deepspeed))
    group_batch_size = training_args.per_device_train_batch_size
    training_args.per_device_train_batch_size = 1  # each dataset item is already one device batch
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed below, with our card

    model, processor, collator = load_for_training(options)
    sources, ratios = zip(*(parse_data_spec(spec) for spec in options.data))
    is_v1 = model.config.model_type == "visionllm_v1"
    if any(isinstance(source, V1DetectionSource) != is_v1 for source in sources):
        raise ValueError("v1detection data trains VisionLLM v1 checkpoints, and only they take it")
    dataset = MixedTaskDataset(
        list(sources), list(ratios), batch_size=group_batch_size, length=options.samples_per_epoch,
        seed=training_args.seed,
    )
    model = apply_stage(model, options.stage)
    preset = STAGES[options.stage]
    started = time.time()

    def card_kwargs(state) -> dict:
        stage = {
            "name": options.stage, "description": preset.description, "steps": state.global_step,
            "learning_rates": preset.learning_rates, "lora": preset.lora,
        }
        return {
            "model_name": Path(training_args.output_dir).name, "stages": [stage], "datasets": list(options.data),
            "command": "visionllm-hf train " + shlex.join(argv),
            "training_time": f"{(time.time() - started) / 60:.1f} min",
        }

    trainer = VisionLLMTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        optimizers=(build_optimizer(model, options.stage, options.learning_rate_scale), None),
        callbacks=[ModelCardCallback(card_kwargs, model)],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    output = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        save_final(trainer.model, processor, output, preset.lora is not None and options.save_merged)
        card_model = trainer.model.get_base_model() if preset.lora is not None else trainer.model
        render_model_card(card_model, **card_kwargs(trainer.state)).save(output / "README.md")
        if push_to_hub:
            repo_id = training_args.hub_model_id or output.name
            api = HfApi(token=training_args.hub_token)
            api.create_repo(repo_id, private=training_args.hub_private_repo, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=output, commit_message=f"visionllm-hf {options.stage}")
    return output


def load_for_training(options: VisionLLMTrainArguments):
    """The checkpoint's model, processor and collator: VisionLLM v2 (and RegionGPT / u-LLaVA) or VisionLLM v1."""
    if AutoConfig.from_pretrained(options.model).model_type == "visionllm_v1":
        processor = VisionLLMv1Processor.from_pretrained(options.model)
        model = VisionLLMv1ForConditionalGeneration.from_pretrained(options.model)
        return model, processor, VisionLLMv1Collator(processor)
    processor = VisionLLMProcessor.from_pretrained(options.model)
    model = VisionLLMForConditionalGeneration.from_pretrained(options.model)
    caption_features = CaptionFeatures(options.caption_encoder) if options.caption_encoder else None
    collator = VisionLLMCollator(processor, max_length=options.max_length, caption_features=caption_features)
    return model, processor, collator


def save_final(model, processor, output: Path, merge: bool):
    """The trained model as a loadable checkpoint; under LoRA also the adapter in `output/adapter`."""
    if hasattr(model, "merge_and_unload"):
        save_adapter(model, output / "adapter")
        processor.save_pretrained(output / "adapter")
        if not merge:
            return
        model = model.merge_and_unload()
    save_checkpoint(model, processor, output)


def main(argv: list[str] | None = None) -> int:
    train(sys.argv[1:] if argv is None else argv)
    return 0


__all__ = ["VisionLLMTrainArguments", "main", "parse_data_spec", "save_final", "shipped_deepspeed_config", "train"]
