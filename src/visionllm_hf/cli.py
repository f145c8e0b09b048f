"""`visionllm-hf` command line: `build` checkpoints and run the `demo`."""

import argparse
import sys
from pathlib import Path

import torch


def build(args: argparse.Namespace) -> int:
    from .builder import (
        assemble_from_pretrained,
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
        model, processor = assemble_from_pretrained(args.vision, args.llm, tokenizer=args.tokenizer)
    elif args.meta:
        from .modeling import VisionLLMForConditionalGeneration

        if args.preset != "visionllm-v2":
            raise SystemExit("--meta describes the paper's sizes: use it with --preset visionllm-v2")
        config = visionllm_v2_config()
        with torch.device("meta"):
            model = VisionLLMForConditionalGeneration(config)
        _print_counts(args.preset, count_parameters(model))
        return 0
    elif args.preset == "tiny":
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


def _print_counts(title: str, counts: dict[str, int]):
    print(f"parameters of {title}:")
    for name, value in counts.items():
        print(f"  {name:<14}{value:>16,d}  ({value / 1e6:,.1f} M)")


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), model_path=args.model)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Reads and checks the data, then scores the model; the metrics go next to the data (or to --out)."""
    import json

    from transformers import AutoModel, AutoProcessor

    from .evaluation import EvaluationData, Evaluator, format_table

    data = EvaluationData(args.data if len(args.data) > 1 else args.data[0], max_images=args.max_images)
    out = Path(args.out) if args.out else data.default_output()
    if not args.out and Path(args.model).is_dir() and out.resolve().parent == Path(args.model).resolve():
        raise SystemExit(f"the data lies in the model folder {args.model}: give --out FILE for the metrics")
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    evaluator = Evaluator(model, processor, data, batch_size=args.batch_size)
    metrics = evaluator.run()
    print(format_table(metrics, evaluator.not_scored))
    out.write_text(json.dumps(metrics, indent=2))
    print(f"metrics written to {out}")
    return 0


def synth(args: argparse.Namespace) -> int:
    from .synthetic import write_dataset

    paths = write_dataset(args.out, num_images=args.num_images, seed=args.seed, size=args.size)
    print(f"wrote {args.num_images} scenes to {paths['root']}: " + ", ".join(p.name for k, p in paths.items() if k != "root"))
    return 0


def predict(args: argparse.Namespace) -> int:
    """Runs a checkpoint over your images; the exit code is 1 when any image failed (see errors.jsonl)."""
    from .prediction import GenerationSettings, run_prediction

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


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionllm-hf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build_parser = commands.add_parser("build", help="write a checkpoint: a preset or pretrained parts")
    build_parser.add_argument("--preset", choices=["tiny", "demo", "tiny-v1", "visionllm-v2"], default="tiny")
    build_parser.add_argument("--out", help="folder to write the checkpoint to")
    build_parser.add_argument("--meta", action="store_true", help="only count parameters, on the meta device")
    build_parser.add_argument("--vision", help="hub id or folder of the pretrained vision tower")
    build_parser.add_argument("--llm", help="hub id or folder of the pretrained causal LM")
    build_parser.add_argument("--tokenizer", help="hub id or folder of the tokenizer (defaults to --llm)")
    build_parser.add_argument("--diffusion", help="Stable Diffusion pipeline (hub id or folder) for a [GEN] decoder")
    build_parser.add_argument("--edit", help="InstructPix2Pix pipeline (hub id or folder) for an [EDIT] decoder")
    build_parser.add_argument("--seed", type=int, default=0)
    build_parser.set_defaults(handler=build)

    demo_parser = commands.add_parser("demo", help="the shipped demo model on every task, pictures and JSON")
    demo_parser.add_argument("--out", default="outputs/demo", help="folder for the pictures and results.json")
    demo_parser.add_argument("--model", help="checkpoint to run (default: the demo model shipped in the package)")
    demo_parser.set_defaults(handler=demo)

    synth_parser = commands.add_parser("synth", help="write synthetic scenes as COCO / conversation / referring files")
    synth_parser.add_argument("--out", required=True)
    synth_parser.add_argument("--num-images", type=int, default=1000)
    synth_parser.add_argument("--seed", type=int, default=0)
    synth_parser.add_argument("--size", type=int, default=128)
    synth_parser.set_defaults(handler=synth)

    eval_parser = commands.add_parser("eval", help="score a checkpoint on your data (a folder or --data specs)")
    eval_parser.add_argument("--model", required=True)
    eval_parser.add_argument(
        "--data", required=True, nargs="+",
        help="a folder (instances.json, captions.json, conversations.json, referring.jsonl, images/), or one or more "
        "FORMAT=PATH[,images=DIR][,task=TASK] with FORMAT coco, referring or conversation",
    )
    eval_parser.add_argument("--max-images", type=int, help="only the first images of each file")
    eval_parser.add_argument("--batch-size", type=int, default=8)
    eval_parser.add_argument("--out", help="JSON file for the metrics (default: eval_results.json next to the data)")
    eval_parser.set_defaults(handler=evaluate)

    validate_parser = commands.add_parser(
        "validate-data", help="what your --data specs hold and every problem in them, without a model (seconds)"
    )
    validate_parser.add_argument(
        "--data", nargs="+", required=True, metavar="FORMAT=PATH[,images=DIR][,task=TASK]",
        help="the specs train and eval take: coco, referring, conversation, generation, v1detection",
    )
    validate_parser.set_defaults(handler=validate_data)

    from .processing.tasks import TASKS

    predict_parser = commands.add_parser("predict", help="run a checkpoint over your images, on one machine or many")
    predict_parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    predict_parser.add_argument(
        "--inputs", required=True,
        help="a folder or glob of images, a COCO .json, a .jsonl of {image, prompt, regions, categories, expression} "
        "records, or a datasets dataset (a save_to_disk folder or a hub name)",
    )
    predict_parser.add_argument("--task", required=True, type=lambda task: task.replace("-", "_"), choices=list(TASKS))
    predict_parser.add_argument("--out", required=True, help="folder for predictions.jsonl, errors.jsonl, ...")
    predict_parser.add_argument("--images", help="folder the image paths of a COCO / JSON-lines file start from")
    predict_parser.add_argument("--image-column", default="image", help="the dataset column holding the images")
    predict_parser.add_argument("--split", help="the dataset split")
    predict_parser.add_argument("--categories", help="comma-separated names to find (default: a COCO input's)")
    predict_parser.add_argument("--expression", help="what grounding / referring_segmentation find")
    predict_parser.add_argument("--prompt", help="the question of vqa / prompt")
    predict_parser.add_argument("--batch-size", type=int, default=8)
    predict_parser.add_argument("--max-tiles", type=int, help="visual-token budget per image (the processor's default)")
    predict_parser.add_argument("--max-new-tokens", type=int, default=64)
    predict_parser.add_argument("--threshold", type=float, default=0.3, help="[DET] / [POSE] score threshold")
    predict_parser.add_argument("--nms-threshold", type=float, default=0.5, help="NMS IoU (1 keeps every candidate)")
    predict_parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    predict_parser.add_argument("--device", help="default: cuda (this process's GPU) if available, else cpu")
    predict_parser.add_argument("--resume", action="store_true", help="skip the images already in --out")
    predict_parser.add_argument("--save-images", action="store_true", help="draw the answers under --out/images/")
    predict_parser.set_defaults(handler=predict)

    commands.add_parser("train", help="fine-tune on your data (see `visionllm-hf train --help`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # TrainingArguments flags are parsed by transformers' HfArgumentParser
        from .trainer.train import main as train_main

        return train_main(argv[1:])
    args = make_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
