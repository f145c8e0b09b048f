"""`visionllm-hf train`: fine-tune a checkpoint on users' data with a stage preset.

    visionllm-hf train --model CHECKPOINT --stage v2-decoders --output_dir out --max_steps 1000 \
        --data coco=annotations.json,images=DIR,task=detection conversation=llava.json,images=DIR

Every `TrainingArguments` flag works (`--deepspeed zero2` or `zero3` picks the configs shipped in the package).
`--per_device_train_batch_size` is the number of samples per device batch; each batch comes from one data
source (task group).

Before any model is loaded, the stage, the `--model` folder and every `--data` spec are checked and every data
file is read and checked (see `data_checks.py`), so bad input fails in seconds, in the user's terms.
"""

import dataclasses
import shlex
import sys
import time
from importlib import resources
from pathlib import Path

import torch
from huggingface_hub import HfApi
from transformers import AutoConfig, HfArgumentParser, TrainerCallback, TrainingArguments
from visionllm_hf_cli import train_options_parser

from ..argument_checks import check_model_reference
from ..builder.checkpoint import save_checkpoint
from ..builder.diffusion import CaptionFeatures
from ..builder.tokenizer import add_video_tokens
from ..model_cards import render_model_card
from ..modeling import VisionLLMForConditionalGeneration, VisionLLMv1ForConditionalGeneration
from ..processing import VisionLLMProcessor
from ..processing.processing_visionllm_v1 import VisionLLMv1Processor
from .collator import VisionLLMCollator
from .data import CocoSource, ConversationSource, GenerationSource, MixedTaskDataset, ReferringSource
from .data_checks import check_source, raise_for_problems
from .data_specs import SOURCE_OPTIONS, parse_data_spec_text, split_data_spec  # noqa: F401 (re-exported)
from .lora import save_adapter
from .stages import STAGES, apply_stage, build_optimizer, continuing_stage
from .trainer import VisionLLMTrainer
from .v1_data import V1DetectionSource, VisionLLMv1Collator

SOURCES = {
    "conversation": ConversationSource,
    "coco": CocoSource,
    "referring": ReferringSource,
    "generation": GenerationSource,
    "v1detection": V1DetectionSource,  # VisionLLM v1 checkpoints only
}


def parse_data_spec(spec: str):
    """`coco=ann.json,images=dir,task=detection,ratio=2` -> (source, ratio); the source reads and checks its file."""
    parsed = parse_data_spec_text(spec)
    if parsed.format == "v1detection":  # V1DetectionSource reads without checking: check the file as COCO data
        raise_for_problems(check_source("coco", parsed.path, parsed.images, task="detection"))
    return SOURCES[parsed.format](parsed.path, parsed.images, **parsed.options), parsed.ratio


def check_stage(stage: str):
    """An unknown `--stage` fails before anything loads."""
    if stage not in STAGES:
        raise ValueError(f"unknown --stage '{stage}'; choose from {', '.join(sorted(STAGES))}")


def check_sources_fit_stage(sources, stage: str):
    """v1detection data goes with VisionLLM v1 stages (and checkpoints), the other formats with v2 ones."""
    is_v1 = STAGES[stage].model_type == "visionllm_v1"
    if any(isinstance(source, V1DetectionSource) != is_v1 for source in sources):
        raise ValueError(f"v1detection data trains VisionLLM v1 checkpoints, and only they take it (stage '{stage}' "
                         f"is for {STAGES[stage].model_type} models)")


def read_data(options) -> tuple[list, list[float]]:
    """
    Before any model loads: checks `--model` and reads its config (a local folder's; a hub id's is read only
    when the stage must be picked from it), picks or checks the stage, reads and checks every `--data` spec,
    and checks the pose data's keypoints against the checkpoint's. Returns the sources and their ratios.
    """
    check_model_reference(options.model)
    config = AutoConfig.from_pretrained(options.model) if options.stage is None or Path(options.model).is_dir() else None
    if options.stage is None:
        options.stage, why = continuing_stage(config.model_type, config.training_history)
        print(f"--stage {options.stage}: {why} (pass --stage to choose another)")
    check_stage(options.stage)
    sources, ratios = zip(*(parse_data_spec(spec) for spec in options.data))
    check_sources_fit_stage(sources, options.stage)
    if config is not None:
        if STAGES[options.stage].model_type != config.model_type:
            raise ValueError(f"--stage {options.stage} is for {STAGES[options.stage].model_type} checkpoints, but "
                             f"{options.model} is a {config.model_type} checkpoint")
        keypoint_names_for(sources, config)
    return list(sources), list(ratios)


def keypoint_names_for(sources, config) -> list[str] | None:
    """
    The keypoint names the model must predict for the pose data: the checkpoint's own, then every name the
    data's categories add (the keypoint decoder then grows new keypoint-name queries, see
    `grow_keypoint_decoder`). Each pose source is told the names, so its targets follow them by name.
    """
    pose_sources = [source for source in sources if isinstance(source, CocoSource) and source.task == "pose"]
    if not pose_sources:
        return None
    if "keypoint" not in (config.routing_decoders or {}).values():
        raise ValueError("the data has pose samples but the checkpoint has no keypoint decoder ([POSE])")
    names = list(config.keypoint_names)
    for source in pose_sources:
        names += [name for name in source.keypoint_names_in_data(names) if name not in names]
    for source in pose_sources:
        source.use_keypoint_names(names)
    return names


def grow_keypoint_decoder(model, names: list[str]):
    """
    Give the keypoint decoder a keypoint-name query for every name in `names` (the checkpoint's names first, in
    their order, then the data's new ones). A new name's query starts at the mean of the trained ones plus
    small noise, so new keypoints start where keypoints usually are and can still be told apart.
    """
    old = list(model.config.keypoint_names)
    if names == old:
        return
    decoder = next(model.decoders[name] for name, kind in model.config.routing_decoders.items() if kind == "keypoint")
    trained = decoder.keypoint_names.weight.detach()
    grown = torch.nn.Embedding(len(names), trained.shape[1]).to(trained.device, trained.dtype)
    with torch.no_grad():
        grown.weight.copy_(trained.mean(0) + 0.02 * trained.std(0) * torch.randn(len(names), trained.shape[1]))
        grown.weight[: len(old)] = trained
    decoder.keypoint_names = grown
    model.config.keypoint_names = list(names)
    print(f"the keypoint decoder now predicts {len(names)} keypoints: added {names[len(old):]} from the data")


def training_arguments_parser() -> HfArgumentParser:
    """transformers' TrainingArguments, with this project's defaults."""
    parser = HfArgumentParser(TrainingArguments)
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


def print_training_arguments_help():
    """Every TrainingArguments flag (`visionllm-hf train --help-all`), after the project's own options."""
    print("\ntransformers' TrainingArguments (every flag works):")
    print(training_arguments_parser().format_help().split("\n", 1)[1])


def parse_train_arguments(argv: list[str]):
    """The project's options (`visionllm_hf_cli.train_options_parser`) and TrainingArguments, from one command line."""
    options, rest = train_options_parser().parse_known_args(argv)
    missing = [flag for flag, value in (("--model", options.model), ("--data", options.data)) if not value]
    if missing:
        raise SystemExit(f"visionllm-hf train needs {' and '.join(missing)} (visionllm-hf train --help)")
    (training_args,) = training_arguments_parser().parse_args_into_dataclasses(args=rest)
    return options, training_args


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
    options, training_args = parse_train_arguments(argv)
    if training_args.deepspeed:
        training_args = dataclasses.replace(training_args, deepspeed=shipped_deepspeed_config(training_args.deepspeed))
    group_batch_size = training_args.per_device_train_batch_size
    training_args.per_device_train_batch_size = 1  # each dataset item is already one device batch
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed below, with our card

    sources, ratios = read_data(options)
    dataset = MixedTaskDataset(
        sources, ratios, batch_size=group_batch_size, length=options.samples_per_epoch, seed=training_args.seed,
    )
    model, processor, collator = load_for_training(options)
    if any(getattr(source, "has_videos", False) for source in sources) and model.config.video_token_id is None:
        add_video_tokens(model, processor)
        print("the data has videos: added <video>, <vid_beg> and </vid_end> to the checkpoint's vocabulary")
    if options.video_temporal_tokens is not None:
        model.config.video_temporal_tokens = options.video_temporal_tokens  # no weights: only what fills the tokens
    keypoint_names = keypoint_names_for(sources, model.config)
    if keypoint_names is not None:
        grow_keypoint_decoder(model, keypoint_names)
    model.config.training_history = [*(model.config.training_history or []), options.stage]  # saved with it
    model = apply_stage(model, options.stage)
    preset = STAGES[options.stage]
    started = time.time()

    def card_kwargs(state) -> dict:
        stage = {
            "name": options.stage, "description": preset.description, "steps": state.global_step,
            "learning_rates": {
                group: rate * options.learning_rate_scale for group, rate in preset.learning_rates.items()
            },  # as trained: the preset's rates times --learning_rate_scale
            "lora": preset.lora,
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


def load_for_training(options):
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


__all__ = [
    "check_model_reference",
    "check_stage",
    "main",
    "parse_data_spec",
    "parse_train_arguments",
    "print_training_arguments_help",
    "read_data",
    "save_final",
    "shipped_deepspeed_config",
    "split_data_spec",
    "train",
]
