"""What each `visionllm-hf` command does, once `visionllm_hf_cli` has parsed its arguments."""

import argparse
import sys
from pathlib import Path

import torch


def build(args: argparse.Namespace) -> int:
    from .builder import (
        assemble_from_pretrained,
        assembly_fields,
        build_demo,
        build_processor,
        build_tiny,
        count_parameters,
        save_checkpoint,
        visionllm_v2_config,
    )

    if args.vision or args.llm:
        if not (args.vision and args.llm):
            raise SystemExit("assembly from pretrained parts needs both --vision and --llm")
        fields = assembly_fields(args.preset) if args.preset else {}
        model, processor = assemble_from_pretrained(args.vision, args.llm, tokenizer=args.tokenizer, **fields)
    elif args.meta:
        from .modeling import VisionLLMForConditionalGeneration

        if args.preset != "visionllm-v2":
            raise SystemExit("--meta describes the paper's sizes: use it with --preset visionllm-v2")
        config = visionllm_v2_config()
        with torch.device("meta"):
            model = VisionLLMForConditionalGeneration(config)
        _print_counts(args.preset, count_parameters(model))
        return 0
    elif args.preset in (None, "tiny"):
        model, processor = build_tiny(seed=args.seed)
    elif args.preset == "demo":
        model, processor = build_demo(seed=args.seed)
    elif args.preset == "tiny-v1":
        from .builder.v1 import build_tiny_v1

        model, processor = build_tiny_v1(seed=args.seed)
    else:
        raise SystemExit(
            f"--preset {args.preset} has no random build here: add --meta to count its parameters, or give "
            "--vision and --llm to assemble it from pretrained weights"
        )
    if args.diffusion or args.edit:
        from .builder.diffusion import add_diffusion_decoders

        model = add_diffusion_decoders(model, generation=args.diffusion, editing=args.edit)
        image_processor = processor.image_processor  # new routing tokens: the processor inserts their queries
        processor = build_processor(model.config, processor.tokenizer, image_processor.image_mean, image_processor.image_std)
    if not args.out:
        raise SystemExit("--out DIR is required to write a checkpoint")
    save_checkpoint(model, processor, args.out)
    _print_counts(args.out, count_parameters(model))
    print(f"saved to {args.out}")
    return 0


def pretrain(args: argparse.Namespace) -> int:
    from .trainer.pretrain import pretrain_clip, pretrain_llm

    training = dict(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed)
    if args.part == "clip":
        if not ((args.captions or args.instances) and args.images):
            raise SystemExit("visionllm-hf pretrain clip needs --images DIR and --captions FILE, --instances FILE or both")
        out = pretrain_clip(args.images, args.out, captions=args.captions, instances=args.instances,
                            preset=args.preset, model=args.model, region_positions=args.region_positions, **training)
    else:
        if not args.text:
            raise SystemExit("visionllm-hf pretrain llm needs --text FILE [FILE ...]")
        out = pretrain_llm(args.text, args.out, preset=args.preset, model=args.model, **training)
    print(f"saved to {out}: give it to `visionllm-hf build --{'vision' if args.part == 'clip' else 'llm'}`")
    return 0


def _print_counts(title: str, counts: dict[str, int]):
    print(f"parameters of {title}:")
    for name, value in counts.items():
        print(f"  {name:<14}{value:>16,d}  ({value / 1e6:,.1f} M)")


def checked_model(model: str | None) -> str | None:
    """`--model` as given, after checking it names a checkpoint folder or a hub id (before anything loads)."""
    from .argument_checks import check_model_reference

    if model is not None:
        try:
            check_model_reference(model)
        except ValueError as error:
            raise SystemExit(f"visionllm-hf: {error}") from None
    return model


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    checked_model(args.model)
    run_demo(Path(args.out), model_path=args.model)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Reads and checks the data, then scores the model; the metrics go next to the data (or to --out)."""
    import json

    from transformers import AutoModel, AutoProcessor

    from .evaluation import EvaluationData, Evaluator, format_table

    if (args.model is None) == (args.predictions is None):
        raise SystemExit("eval: give --model (run a checkpoint) or --predictions (score predict's output), not both")
    if args.model is not None:
        checked_model(args.model)
    data = EvaluationData(args.data if len(args.data) > 1 else args.data[0], max_images=args.max_images)
    out = Path(args.out) if args.out else data.default_output()
    if not args.out and args.model and Path(args.model).is_dir() and out.resolve().parent == Path(args.model).resolve():
        raise SystemExit(f"the data lies in the model folder {args.model}: give --out FILE for the metrics")
    if args.predictions is not None:
        from .evaluation.from_predictions import score_predictions

        metrics, not_scored = score_predictions(args.predictions, data)
    else:
        model = AutoModel.from_pretrained(args.model, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
        evaluator = Evaluator(model, processor, data, batch_size=args.batch_size)
        metrics, not_scored = evaluator.run(), evaluator.not_scored
    print(format_table(metrics, not_scored))
    out.write_text(json.dumps(metrics, indent=2))
    print(f"metrics written to {out}")
    return 0


def synth(args: argparse.Namespace) -> int:
    from .synthetic import write_dataset

    paths = write_dataset(args.out, num_images=args.num_images, seed=args.seed, size=args.size)
    print(f"wrote {args.num_images} scenes to {paths['root']}: " + ", ".join(p.name for k, p in paths.items() if k != "root"))
    if args.clips:
        from .synthetic.clips import write_clip_dataset

        clips = write_clip_dataset(args.out, args.clips, seed=args.seed, size=args.size, num_frames=args.num_frames)
        print(f"wrote {args.clips} clips of {args.num_frames} frames: "
              + ", ".join(p.name for k, p in clips.items() if k != "root"))
    return 0


def predict(args: argparse.Namespace) -> int:
    """Runs a checkpoint over your images; the exit code is 1 when any image failed (see errors.jsonl)."""
    from .prediction import GenerationSettings, run_prediction

    checked_model(args.model)
    settings = GenerationSettings(args.max_tiles, args.max_new_tokens, args.threshold, args.nms_threshold)
    categories = [name.strip() for name in args.categories.split(",") if name.strip()] if args.categories else None
    try:
        return run_prediction(
            args.model, args.inputs, args.task, args.out, images=args.images, image_column=args.image_column,
            split=args.split, categories=categories, expression=args.expression, prompt=args.prompt,
            batch_size=args.batch_size, settings=settings, dtype=args.dtype, device=args.device,
            resume=args.resume, save_images=args.save_images,
        )
    except ValueError as error:  # the inputs or options as a whole (an image's own problem goes to errors.jsonl)
        raise SystemExit(f"visionllm-hf predict: {error}") from None


def validate_data(args: argparse.Namespace) -> int:
    from .trainer.data_report import describe_data

    report, errors = describe_data(args.data)
    print(report)
    print("no problem found: train and eval read it all" if not errors else f"{errors} error(s): fix them first")
    return 0 if not errors else 1


def app(args: argparse.Namespace) -> int:
    """Serves the page until stopped (Ctrl-C); gradio, the `app` extra, is imported only here."""
    checked_model(args.model)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit("visionllm-hf app needs gradio: pip install 'visionllm-hf[app]'") from None
    from .app import launch_app

    try:
        launch_app(args.model, host=args.host, port=args.port, device=args.device)
    except ValueError as error:  # a checkpoint the page cannot run
        raise SystemExit(f"visionllm-hf app: {error}") from None
    return 0


HANDLERS = {
    "build": build,
    "pretrain": pretrain,
    "demo": demo,
    "synth": synth,
    "validate-data": validate_data,
    "eval": evaluate,
    "predict": predict,
    "app": app,
}


def main(argv: list[str] | None = None) -> int:
    """The `visionllm-hf` command (its arguments are parsed in `visionllm_hf_cli`, which answers `--help` fast)."""
    from visionllm_hf_cli import main as parse_and_run

    return parse_and_run(argv)


if __name__ == "__main__":
    sys.exit(main())
