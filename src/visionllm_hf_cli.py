"""`visionllm-hf`: pretrain parts, build checkpoints, run the demo, write synthetic data, check your data, train,
evaluate, predict.

This module only parses arguments, so `--help` answers at once: it imports neither torch nor visionllm_hf (whose
import registers the model classes with transformers and takes seconds). Each command's work lives in
`visionllm_hf.cli` and is imported once its arguments are parsed.

    visionllm-hf COMMAND --help
"""

import argparse
import sys

TRAIN_HELP_TAIL = """
transformers' TrainingArguments:
  every TrainingArguments flag works as well; the ones used most here:
  --output_dir DIR                  where checkpoints, the model card and the final model go (required)
  --max_steps N                     training steps (each step is one device batch from one data source)
  --per_device_train_batch_size N   samples per device batch (default 8)
  --save_steps N / --save_strategy no
  --logging_steps N                 how often losses (every decoder component too) are logged
  --resume_from_checkpoint DIR      continue an interrupted run
  --seed N, --use_cpu, --bf16, --gradient_checkpointing, --report_to tensorboard, --push_to_hub
  --deepspeed zero2 | zero3         the ZeRO configs shipped in the package (or a JSON file)
  visionllm-hf train --help-all     lists them all (imports transformers: a few seconds)
"""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionllm-hf", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _build_parser(commands)
    _pretrain_parser(commands)
    demo = commands.add_parser("demo", help="the shipped demo model on every task: pictures and JSON")
    demo.add_argument("--out", default="outputs/demo", help="folder for the pictures and results.json")
    demo.add_argument("--model", help="checkpoint to run (default: the demo model shipped in the package)")
    synth = commands.add_parser("synth", help="write synthetic scenes as COCO / conversation / referring files")
    synth.add_argument("--out", required=True, help="folder to write to (images/, instances.json, ...)")
    synth.add_argument("--num-images", type=int, default=1000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=128, help="side of the square images in pixels")
    synth.add_argument("--clips", type=int, default=0,
                       help="also write this many video clips of moving shapes (clips/, video_conversations.json, "
                            "video_masks.json)")
    synth.add_argument("--num-frames", type=int, default=8, help="frames per clip")
    validate = commands.add_parser(
        "validate-data", help="what your --data specs hold and every problem in them, without a model (seconds)"
    )
    validate.add_argument(
        "--data", nargs="+", required=True, metavar="FORMAT=PATH[,images=DIR][,task=TASK]",
        help="the specs train and eval take: coco, referring, conversation, generation, v1detection",
    )
    commands.add_parser("train", help="fine-tune a checkpoint on your data (visionllm-hf train --help)", add_help=False)
    _eval_parser(commands)
    _predict_parser(commands)
    _app_parser(commands)
    return parser


def _build_parser(commands):
    build = commands.add_parser("build", help="write a checkpoint: a preset or pretrained parts")
    build.add_argument(
        "--preset", choices=["tiny", "demo", "tiny-v1", "visionllm-v2"],
        help="the model's sizes (default tiny); with --vision and --llm, what it adds to them: demo = its decoders, "
        "tiling and projector norm, visionllm-v2 = 4 tiles and a global view",
    )
    build.add_argument("--out", help="folder to write the checkpoint to")
    build.add_argument("--meta", action="store_true", help="only count parameters, on the meta device")
    build.add_argument("--vision", help="hub id or folder of the pretrained vision tower")
    build.add_argument("--llm", help="hub id or folder of the pretrained causal LM")
    build.add_argument("--tokenizer", help="hub id or folder of the tokenizer (defaults to --llm)")
    build.add_argument("--diffusion", help="Stable Diffusion pipeline (hub id or folder) for a [GEN] decoder")
    build.add_argument("--edit", help="InstructPix2Pix pipeline (hub id or folder) for an [EDIT] decoder")
    build.add_argument("--seed", type=int, default=0)


def _pretrain_parser(commands):
    pretrain = commands.add_parser(
        "pretrain", help="stage 0: a CLIP tower or an LLM on your data, for `build --vision DIR --llm DIR`"
    )
    pretrain.add_argument("part", choices=["clip", "llm"], help="clip: contrastive on image-caption pairs; llm: "
                          "next-token on the data's text")
    pretrain.add_argument("--out", required=True, help="folder to write the pretrained part to")
    pretrain.add_argument("--captions", help="clip: a COCO captions file (image-caption pairs)")
    pretrain.add_argument("--instances", help="clip: a COCO instances file (region-text pairs: masks and names)")
    pretrain.add_argument("--region-positions", action="store_true",
                          help="clip: region texts also say where the region is ('... at the top left')")
    pretrain.add_argument("--images", help="clip: the folder its file names start from")
    pretrain.add_argument("--text", nargs="+", help="llm: .txt, COCO captions, conversation JSON or referring "
                          ".jsonl files")
    pretrain.add_argument("--preset", choices=["tiny", "demo"], default="demo", help="sizes of a new random part")
    pretrain.add_argument("--model", help="continue from this folder (a CLIP or causal LM) instead of a preset")
    pretrain.add_argument("--steps", type=int, default=1000)
    pretrain.add_argument("--batch-size", type=int, default=32)
    pretrain.add_argument("--learning-rate", type=float, default=1e-3)
    pretrain.add_argument("--seed", type=int, default=0)


def _eval_parser(commands):
    evaluate = commands.add_parser("eval", help="score a checkpoint on your data (a folder or --data specs)")
    evaluate.add_argument("--model", help="checkpoint folder or hub id (or --predictions)")
    evaluate.add_argument(
        "--predictions", help="score what `visionllm-hf predict` wrote instead of running a model: its --out folder "
        "or coco_results.json (box and mask AP)",
    )
    evaluate.add_argument(
        "--data", required=True, nargs="+",
        help="a folder (instances.json, captions.json, conversations.json, referring.jsonl, images/), or one or "
        "more FORMAT=PATH[,images=DIR][,task=TASK] with FORMAT coco, referring or conversation",
    )
    evaluate.add_argument("--max-images", type=int, help="only the first images of each file")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--out", help="JSON file for the metrics (default: eval_results.json next to the data)")


def _predict_parser(commands):
    predict = commands.add_parser("predict", help="run a checkpoint over your images, on one machine or many")
    predict.add_argument("--model", required=True, help="checkpoint folder or hub id")
    predict.add_argument(
        "--inputs", required=True,
        help="a folder or glob of images, a COCO .json, a .jsonl of {image, prompt, regions, categories, expression} "
        "records, or a datasets dataset (a save_to_disk folder or a hub name)",
    )
    predict.add_argument(
        "--task", required=True,
        help="caption, vqa, prompt, detection, instance-segmentation, pose, grounding, referring-segmentation, "
        "region-caption, region-classification or interactive-segmentation",
    )
    predict.add_argument("--out", required=True, help="folder for predictions.jsonl, errors.jsonl, ...")
    predict.add_argument("--images", help="folder the image paths of a COCO / JSON-lines file start from")
    predict.add_argument("--image-column", default="image", help="the dataset column holding the images")
    predict.add_argument("--split", help="the dataset split")
    predict.add_argument("--categories", help="comma-separated names to find (default: a COCO input's)")
    predict.add_argument("--expression", help="what grounding / referring-segmentation find")
    predict.add_argument("--prompt", help="the question of vqa / prompt")
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--max-tiles", type=int, help="visual-token budget per image (the processor's default)")
    predict.add_argument("--max-new-tokens", type=int, default=64)
    predict.add_argument("--threshold", type=float, default=0.3, help="[DET] / [POSE] score threshold")
    predict.add_argument("--nms-threshold", type=float, default=0.5, help="NMS IoU (1 keeps every candidate)")
    predict.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    predict.add_argument("--device", help="default: cuda (this process's GPU) if available, else cpu")
    predict.add_argument("--resume", action="store_true", help="skip the images already in --out")
    predict.add_argument("--save-images", action="store_true", help="draw the answers under --out/images/")


def _app_parser(commands):
    app = commands.add_parser("app", help="a web page to try a checkpoint on your images (gradio: the app extra)")
    app.add_argument("--model", help="checkpoint folder or hub id (default: the demo model shipped in the package)")
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    app.add_argument("--port", type=int, default=7860)
    app.add_argument("--device", help="default: cuda if available, else cpu")


def train_options_parser() -> argparse.ArgumentParser:
    """The project's own `train` options; everything else on the command line goes to TrainingArguments."""
    parser = argparse.ArgumentParser(
        prog="visionllm-hf train", add_help=False, allow_abbrev=False, epilog=TRAIN_HELP_TAIL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune a checkpoint on your data with a stage preset (what is frozen, LoRA, learning rates), "
        "through transformers' Trainer. Data, stage and checkpoint are checked before the model loads.",
    )
    options = parser.add_argument_group("visionllm-hf train options")
    options.add_argument("-h", "--help", action="store_true", help="show this help (--help-all: every flag)")
    options.add_argument("--help-all", action="store_true", help="also list every TrainingArguments flag")
    options.add_argument("--model", help="checkpoint folder (or hub id) to start from (required)")
    options.add_argument(
        "--data", nargs="+", metavar="FORMAT=PATH[,images=DIR][,task=TASK][,ratio=R]",
        help="one or more data sources (required); FORMAT: conversation, coco, referring, generation (VisionLLM v2 "
        "checkpoints), v1detection (v1); `visionllm-hf validate-data` checks them",
    )
    options.add_argument(
        "--stage",
        help="a stage preset (v2-pretrain, v2-tune, v2-decoders, v2-decoders-only, regiongpt-pretrain, "
        "regiongpt-finetune, ullava, from-scratch, v1-stage1, v1-stage2, v1-from-scratch); by default the stage "
        "that continues the checkpoint's training_history (from-scratch for a model trained from random weights)",
    )
    options.add_argument("--learning_rate_scale", type=float, default=1.0,
                         help="multiplies every learning rate of the stage preset (the card records the result)")
    options.add_argument("--samples_per_epoch", type=int, help="batches per epoch (default: data size)")
    options.add_argument("--max_length", type=int, help="truncate longer training sequences")
    options.add_argument("--save_merged", type=_boolean, default=True,
                         help="with LoRA, also save the merged full model (default true)")
    options.add_argument("--video_temporal_tokens", choices=("frame_means", "frame_changes"),
                         help="what a video's temporal tokens carry (saved in the config; default: the checkpoint's)")
    options.add_argument("--caption_encoder", help="Stable Diffusion pipeline (hub id or folder) whose text encoder "
                         "gives the targets of the [GEN]/[EDIT] text-feature loss")
    return parser


def _boolean(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        options, rest = train_options_parser().parse_known_args(argv[1:])
        if options.help or options.help_all:
            train_options_parser().print_help()
            if options.help_all:
                from visionllm_hf.trainer.train import print_training_arguments_help

                print_training_arguments_help()
            return 0
        from visionllm_hf.trainer.train import main as train_main

        return train_main(argv[1:])
    args = make_parser().parse_args(argv)
    from visionllm_hf import cli

    return cli.HANDLERS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
