"""`visionllm-hf predict`: read the inputs, run the checkpoint over them (in one process or many), write the files.

Under `torchrun --nproc_per_node N` or `accelerate launch`, accelerate's `PartialState` starts the process group;
each process predicts a contiguous shard of the inputs into its own files, and the main process merges them into
the same `predictions.jsonl` (input order), `errors.jsonl` and `coco_results.json` as a one-process run.
"""

import json
from pathlib import Path

import torch
from accelerate import PartialState
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor

from .inputs import PredictionInputs, read_inputs
from .outputs import (
    COCO_RESULTS,
    COCO_TASKS,
    ERRORS,
    PICTURES,
    PredictionFiles,
    category_ids,
    coco_results,
    save_picture,
)
from .predictor import GenerationSettings, load_input, predict_batches, task_name

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto`: bfloat16 on a GPU that supports it, else float32; or one of `DTYPES` by name."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype '{dtype}'; choose from auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    on_gpu = torch.device(device).type == "cuda"
    return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32


def default_device(state: PartialState) -> str:
    """This process's GPU when there is one (`cuda:<local rank>`), else the CPU."""
    return f"cuda:{state.local_process_index}" if torch.cuda.is_available() else "cpu"


def load_checkpoint(model_path: str | Path, dtype: torch.dtype, device: str):
    """The model (eval mode, on `device`, in `dtype`) and processor of a folder or hub id."""
    model = AutoModel.from_pretrained(model_path, trust_remote_code=True, dtype=dtype)
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    return model.to(device).eval(), processor


def run_prediction(
    model_path: str | Path,
    source: str | Path,
    task: str,
    out: str | Path,
    *,
    images: str | Path | None = None,
    image_column: str = "image",
    split: str | None = None,
    categories: list[str] | None = None,
    expression: str | None = None,
    prompt: str | None = None,
    batch_size: int = 8,
    settings: GenerationSettings | None = None,
    dtype: str = "auto",
    device: str | None = None,
    resume: bool = False,
    save_images: bool = False,
) -> int:
    """
    What `visionllm-hf predict` does; returns its exit code: 1 when any image failed (see `errors.jsonl`), else 0.

    Args:
        model_path (`str`): the checkpoint (folder or hub id).
        source, images, image_column, split: the inputs (see `read_inputs`).
        task (`str`): a name of `processing/tasks.py`'s `TASKS` (`-` spellings accepted).
        out (`str`): the output folder.
        categories, expression, prompt: shared by every image; a record's own values override them. Categories
            default to a COCO input's.
        batch_size (`int`, defaults to 8), settings (`GenerationSettings`): as `predict` takes them.
        dtype (`str`, defaults to `"auto"`), device (`str`, *optional*): where the model runs (see `resolve_dtype`,
            `default_device`).
        resume (`bool`): skip the images already in the output folder's predictions.
        save_images (`bool`): also draw every answer onto its image under `out/images/`.
    """
    task = task_name(task)
    inputs = read_inputs(source, images=images, image_column=image_column, split=split)
    categories = categories or inputs.category_names
    on_cpu = not torch.cuda.is_available() or (device is not None and torch.device(device).type == "cpu")
    state = PartialState(cpu=on_cpu)
    device = device or default_device(state)
    files = PredictionFiles(Path(out), state.process_index, state.num_processes)
    files.start(resume)
    state.wait_for_everyone()
    done = files.done_indices() if resume else set()
    with state.split_between_processes(inputs.records) as shard:
        pending = [record for record in shard if record.index not in done]
    if pending:
        model, processor = load_checkpoint(model_path, resolve_dtype(dtype, device), device)
        shared = {"categories": categories, "expression": expression, "prompt": prompt}
        batches = predict_batches(model, processor, pending, task, shared, settings or GenerationSettings(),
                                  batch_size, inputs.folder)
        _write_batches(batches, pending, files, Path(out) / PICTURES if save_images else None, shared, inputs.folder,
                       show_progress=state.is_main_process, description=f"predict {task}")
    state.wait_for_everyone()
    if state.is_main_process:
        _finish(files, inputs, task, categories, Path(out))
    state.wait_for_everyone()
    return 1 if _failed(Path(out)) else 0


def _write_batches(batches, pending: list, files: PredictionFiles, pictures: Path | None, shared: dict, folder,
                   show_progress: bool, description: str):
    """Append each batch to this process's files as it comes (and draw its pictures), with a progress bar."""
    records = {record.index: record for record in pending}
    with tqdm(total=len(pending), unit="img", desc=description, disable=not show_progress) as progress:
        for batch in batches:
            files.append(batch)
            for result in batch if pictures else []:
                if "error" not in result:
                    item = load_input(records[result["index"]], shared, folder)
                    save_picture(result, item.image, item.regions, pictures)
            progress.update(len(batch))


def _finish(files: PredictionFiles, inputs: PredictionInputs, task: str, categories: list[str] | None, out: Path):
    """Merge the processes' files; for detection, instance segmentation and pose, write the COCO results."""
    predictions, errors = files.merge()
    if task in COCO_TASKS:
        names = [*(categories or []), *(name for record in inputs.records for name in record.categories or [])]
        results = coco_results(predictions, category_ids(names, inputs.categories))
        (out / COCO_RESULTS).write_text(json.dumps(results))
    print(f"{len(predictions)} images predicted, {len(errors)} failed; written to {out}")


def _failed(out: Path) -> bool:
    errors = out / ERRORS
    return errors.is_file() and bool(errors.read_text().strip())


__all__ = ["DTYPES", "default_device", "load_checkpoint", "resolve_dtype", "run_prediction"]
