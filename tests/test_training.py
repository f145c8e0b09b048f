"""Fine-tuning: the train CLI, distributed runs, resuming, stage presets, LoRA, DeepSpeed configs, model card."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import TrainingArguments

from visionllm_hf import VisionLLMForConditionalGeneration
from visionllm_hf.builder import build_tiny, save_checkpoint
from visionllm_hf.cli import main
from visionllm_hf.trainer import (
    STAGES,
    CocoSource,
    ConversationSource,
    DatasetSource,
    MixedTaskDataset,
    ReferringSource,
    VisionLLMCollator,
    apply_stage,
    build_optimizer,
    load_adapter,
    save_adapter,
)
from visionllm_hf.trainer.stages import MODULE_GROUPS, module_group
from visionllm_hf.trainer.train import shipped_deepspeed_config

from .helpers import random_image
from .test_hub_packaging import load_in_fresh_environment
from .synthetic_data import write_datasets


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    paths = write_datasets(root, num_images=10)
    model, processor = build_tiny(seed=0)
    save_checkpoint(model, processor, root / "base")
    paths["base"] = root / "base"
    return paths


def train_args(data, output: Path, *extra: str) -> list[str]:
    return [
        "--model", str(data["base"]),
        "--data", f"coco={data['coco']},images={data['images']},task=detection",
        f"conversation={data['conversation']},images={data['images']}",
        "--output_dir", str(output), "--per_device_train_batch_size", "2", "--use_cpu", "--seed", "0",
        "--disable_tqdm", "true", "--logging_steps", "1", *extra,
    ]


def log_history(folder: Path) -> list[dict]:
    return json.loads((folder / "trainer_state.json").read_text())["log_history"]


def test_cli_trains_20_steps_loss_goes_down_components_logged(data, tmp_path):
    output = tmp_path / "run"
    argv = ["train", *train_args(data, output, "--stage", "v2-decoders", "--max_steps", "20",
                                 "--learning_rate_scale", "10", "--save_steps", "20")]
    assert main(argv) == 0
    history = [entry for entry in log_history(output / "checkpoint-20") if "loss" in entry]
    losses = [entry["loss"] for entry in history]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    logged = set().union(*history)
    assert {"lm_loss", "det_class", "det_l1", "det_giou", "image_token_norm", "image_token_spread"} <= logged
    card = (output / "README.md").read_text()
    assert "v2-decoders" in card and "20 steps" in card and "visionllm-hf train" in card
    assert f"coco={data['coco']}" in card
    reloaded = VisionLLMForConditionalGeneration.from_pretrained(output).eval()  # the merged model
    assert reloaded.config.routing_decoders == {"det": "object", "seg": "mask", "pose": "keypoint", "loc": "box"}
    images, text = [random_image(40, 60)], ["<image> What shapes are there?"]
    loaded = load_in_fresh_environment(output, {"images": images, "text": text}, tmp_path)
    _, processor = build_tiny(seed=0)
    with torch.no_grad():
        expected = reloaded(**processor(images=images, text=text)).logits
    assert (loaded["logits"] - expected).abs().max() <= 1e-5


def test_resuming_from_step_10_reproduces_steps_11_to_20(data, tmp_path):
    extra = ("--stage", "v2-decoders-only", "--max_steps", "20", "--save_steps", "10", "--learning_rate_scale", "10")
    assert main(["train", *train_args(data, tmp_path / "full", *extra)]) == 0
    resumed = train_args(data, tmp_path / "resumed", *extra,
                         "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-10"))
    assert main(["train", *resumed]) == 0
    full = {e["step"]: e["loss"] for e in log_history(tmp_path / "full" / "checkpoint-20") if "loss" in e}
    again = {e["step"]: e["loss"] for e in log_history(tmp_path / "resumed" / "checkpoint-20") if "loss" in e}
    for step in range(11, 21):
        assert abs(full[step] - again[step]) <= 1e-5, (step, full[step], again[step])


def test_two_process_run_ends_with_identical_weights(data, tmp_path):
    script = Path(__file__).with_name("ddp_train.py")
    args = train_args(data, tmp_path / "ddp", "--stage", "v2-decoders", "--max_steps", "4",
                      "--save_strategy", "no", "--ddp_backend", "gloo")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), *args],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(tmp_path / "ddp" / f"rank{r}.safetensors") for r in (0, 1))
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    base = load_file(data["base"] / "model.safetensors")
    trained = [k for k in rank0 if k.removeprefix("base_model.model.").startswith("decoders.")]
    assert any(not torch.equal(rank0[k], base[k.removeprefix("base_model.model.")]) for k in trained)


def all_task_batch(processor):
    """One batch touching every module: regions, and all four routing tokens with targets."""
    samples = [{
        "messages": [
            {"role": "user", "content": "<image>\nWhat is in <region>? Find things."},
            {"role": "assistant", "content": "a man [POSE], a cat [DET], it [SEG], there <LOC>."},
        ],
        "images": [random_image(64, 64, seed=4)],
        "regions": [[{"box": [5, 5, 40, 40]}]],
        "targets": [
            {"boxes": [[0.2, 0.1, 0.5, 0.9]], "keypoints": torch.rand(1, 17, 3).round()},
            {"boxes": [[0.1, 0.1, 0.4, 0.4]], "masks": torch.ones(1, 64, 64)},
            {"mask": torch.zeros(64, 64).index_fill_(0, torch.arange(10, 40), 1.0)},
            {"box": [0.3, 0.3, 0.6, 0.8]},
        ],
    }]
    return VisionLLMCollator(processor)(samples)


@pytest.mark.parametrize("stage", sorted(name for name, preset in STAGES.items() if preset.model_type == "visionllm"))
def test_stage_freezes_trains_and_sets_learning_rates(stage):
    model, processor = build_tiny(seed=0)
    if stage.startswith("regiongpt"):
        model, processor = _regiongpt_tiny()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trained = apply_stage(model, stage)
    optimizer = build_optimizer(trained, stage)
    preset = STAGES[stage]
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == preset.learning_rates
    batch = all_task_batch(processor)
    trained.train()
    for _ in range(3):
        loss = trained(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed_groups = set()
    for name, parameter in trained.named_parameters():
        original = before.get(name.removeprefix("base_model.model.").replace(".base_layer", ""))
        if original is None or original.shape != parameter.shape:
            continue  # LoRA adapters and trainable-token deltas are new
        group = module_group(name)
        if not torch.equal(original, parameter.detach()):
            changed_groups.add(group)
            assert group in preset.learning_rates, f"{stage}: frozen {name} changed"
    expected = set(preset.learning_rates) - ({"llm"} if preset.lora else set())
    assert expected <= changed_groups, (stage, expected - changed_groups)
    if preset.lora:
        lora = [p for n, p in trained.named_parameters() if "lora_B" in n]
        assert lora and any(p.abs().sum() > 0 for p in lora)  # B starts at zero; trained it moves


def _regiongpt_tiny():
    from visionllm_hf.builder import add_special_tokens, build_processor, make_config, train_tiny_tokenizer
    from visionllm_hf.builder.presets import tiny_detector_config, tiny_sam_config, tiny_text_config, tiny_vision_config

    tokenizer = train_tiny_tokenizer()
    config = make_config(
        tiny_vision_config(), tiny_text_config(len(tokenizer) + 9), vision_feature_layer=-1,
        region_encoder_type="regiongpt", mask_decoder_config=tiny_sam_config(),
        object_decoder_config=tiny_detector_config(),
        routing_decoders={"det": "object", "seg": "mask", "pose": "keypoint", "loc": "box"},
        **add_special_tokens(tokenizer),
    )
    torch.manual_seed(0)
    return VisionLLMForConditionalGeneration(config), build_processor(config, tokenizer)


def test_lora_adapter_round_trip_and_merge(tmp_path):
    model, processor = build_tiny(seed=0)
    batch = all_task_batch(processor)
    trained = apply_stage(model, "v2-decoders")
    optimizer = build_optimizer(trained, "v2-decoders", learning_rate_scale=100)
    trained.train()
    for _ in range(3):
        loss = trained(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained.eval()
    with torch.no_grad():
        expected = trained(**batch).logits
    save_adapter(trained, tmp_path / "adapter")
    base, _ = build_tiny(seed=0)
    reloaded = load_adapter(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, atol=1e-5, rtol=0)
        merged = reloaded.merge_and_unload().eval()
        assert (merged(**batch).logits - expected).abs().max() <= 1e-4
    assert not any("lora" in name for name, _ in merged.named_parameters())


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_shipped_zero_configs_are_accepted(name, tmp_path):
    path = shipped_deepspeed_config(name)
    assert json.loads(Path(path).read_text())["zero_optimization"]["stage"] == int(name[-1])
    arguments = TrainingArguments(output_dir=str(tmp_path), deepspeed=path, report_to="none")
    assert arguments.hf_deepspeed_config.config["zero_optimization"]["stage"] == int(name[-1])


def test_collator_labels_only_the_answers(data):
    _, processor = build_tiny(seed=0)
    sample = ConversationSource(str(data["conversation"]), str(data["images"])).sample(0, random.Random(0))
    batch = VisionLLMCollator(processor)([sample, sample | {"messages": sample["messages"][:1] + [
        {"role": "assistant", "content": "ok"}]}])
    tokenizer = processor.tokenizer
    for row, message in enumerate([sample["messages"][-1]["content"], "ok"]):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert tokenizer.decode(labelled).strip() == message + tokenizer.eos_token
    assert batch["attention_mask"][1, -1] == 0  # training pads on the right


def test_sources_build_valid_samples(data):
    rng = random.Random(0)
    coco = {task: CocoSource(str(data["coco"]), str(data["images"]), task=task) for task in
            ("detection", "instance_segmentation", "interactive_segmentation", "pose")}
    detection = coco["detection"].sample(0, rng)
    answer = detection["messages"][-1]["content"]
    assert answer.count("[DET]") == len(detection["targets"]) >= 1
    names = [name.removesuffix(" [DET]") for name in answer.rstrip(".").split(", ")]
    assert all(name in detection["messages"][0]["content"] for name in names)
    assert [target["category"] for target in detection["targets"]] == names  # named for the det_category loss
    segmentation = coco["instance_segmentation"].sample(0, rng)
    assert all(t["masks"].shape[0] == t["boxes"].shape[0] for t in segmentation["targets"])
    interactive = coco["interactive_segmentation"].sample(0, rng)
    assert "<region>" in interactive["messages"][0]["content"] and interactive["targets"][0]["mask"].any()
    pose = coco["pose"].sample(0, rng)
    assert pose["targets"][0]["keypoints"].shape[1:] == (17, 3)
    assert pose["targets"][0]["category"] in pose["messages"][-1]["content"]
    record = json.loads(Path(data["referring"]).read_text().splitlines()[0])
    grounding = ReferringSource(str(data["referring"]), str(data["images"]), task="grounding").sample(0, rng)
    assert grounding["messages"][-1]["content"] == f"{record['expression']} [DET]."
    (target,) = grounding["targets"]  # one object, named by the expression for the det_category loss
    assert target["category"] == record["expression"] and target["boxes"].shape == (1, 4)
    width, height = Image.open(Path(data["images"]) / record["image"]).size
    torch.testing.assert_close(target["boxes"][0] * torch.tensor([width, height] * 2), torch.tensor(record["box"]).float())
    for task in ReferringSource.tasks:
        sample = ReferringSource(str(data["referring"]), str(data["images"]), task=task).sample(0, rng)
        assert sample["messages"][-1]["content"]
    import datasets

    table = datasets.Dataset.from_dict(
        {"picture": [Image.fromarray(random_image(8, 8))], "q": ["what?"], "a": ["this"]},
        features=datasets.Features({"picture": datasets.Image(), "q": datasets.Value("string"), "a": datasets.Value("string")}),
    )
    hf_sample = DatasetSource(table, image_column="picture", question_column="q", answer_column="a").sample(0, rng)
    assert hf_sample["messages"][-1]["content"] == "this" and hf_sample["images"][0].size == (8, 8)
    _, processor = build_tiny(seed=0)
    assert VisionLLMCollator(processor)([hf_sample])["pixel_values"].shape[0] >= 1
    mixed = MixedTaskDataset([coco["detection"], coco["pose"]], [1, 1], batch_size=3, seed=5)
    assert [s["task"] for s in mixed[7]] in (["detection"] * 3, ["pose"] * 3)  # one task group per batch
    assert [s["messages"] for s in mixed[7]] == [s["messages"] for s in mixed[7]]  # a pure function of the index


def test_bad_data_specs_are_rejected(data):
    with pytest.raises(ValueError, match="must start with one of"):
        main(["train", "--model", str(data["base"]), "--data", "yolo=x", "--output_dir", "/tmp/never"])
    with pytest.raises(ValueError, match="unknown COCO task"):
        CocoSource(str(data["coco"]), str(data["images"]), task="depth")
