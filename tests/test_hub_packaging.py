"""A saved folder is self-sufficient: it loads through trust_remote_code where visionllm_hf is not installed."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

import visionllm_hf
from visionllm_hf.builder import save_checkpoint, write_remote_code
from visionllm_hf.demo import DEMO_MODEL

from .helpers import ScriptedTokens, random_image
from .test_regions import build as build_with_region_encoder

FLAT_CODE_FILES = {
    "configuration_visionllm.py",
    "modeling_visionllm.py",
    "region_encoders.py",
    "super_link.py",
    "super_link_generation.py",
    "decoders.py",
    "decoder_box.py",
    "decoder_mask.py",
    "decoder_object.py",
    "decoder_keypoint.py",
    "decoder_diffusion.py",
    "processing_visionllm.py",
    "video_loading.py",
    "video_masklets.py",
    "image_processing_visionllm.py",
    "regions.py",
    "post_processing.py",
    "special_tokens.py",
    "transformers_compat.py",
    "image_layout.py",
    "input_checks.py",
    "answer_forcing.py",
    "tasks.py",
    "templates.py",
}


def test_checkpoint_folder_holds_safetensors_auto_map_and_flat_code(tiny_checkpoint):
    files = {path.name for path in Path(tiny_checkpoint).iterdir()}
    assert "model.safetensors" in files and not any(name.endswith(".bin") for name in files)
    assert FLAT_CODE_FILES <= files
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_visionllm.VisionLLMConfig",
        "AutoModel": "modeling_visionllm.VisionLLMForConditionalGeneration",
        "AutoModelForImageTextToText": "modeling_visionllm.VisionLLMForConditionalGeneration",
    }
    processor_config = json.loads((tiny_checkpoint / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_visionllm.VisionLLMProcessor"
    for name in FLAT_CODE_FILES:  # only sibling imports (`from .x import`), nothing from our package
        tree = ast.parse((tiny_checkpoint / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and f"{node.module}.py" in files, (name, node.module)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not any(module.startswith("visionllm_hf") for module in modules), name


def run_in_fresh_environment(script: str, checkpoint: Path, inputs: dict, workdir: Path, block: str = "") -> dict:
    """
    Run tests/`script` on `checkpoint` and `inputs` in a subprocess where visionllm_hf (and the comma-separated
    `block` packages) cannot be imported; what it saved, with its classes checked to be the checkpoint's code.
    """
    torch.save(inputs, workdir / "inputs.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(workdir / "modules"), "BLOCK_MODULES": block}
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name(script)), str(checkpoint), str(workdir / "inputs.pt"),
         str(workdir / "out.pt")],
        env=env, cwd=workdir, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = torch.load(workdir / "out.pt", weights_only=False)  # written by our own subprocess
    assert all(module.startswith("transformers_modules.") for module in loaded["modules"]), loaded["modules"]
    return loaded


def load_in_fresh_environment(checkpoint: Path, processor_kwargs: dict, workdir: Path, block: str = "") -> dict:
    """A VisionLLM (v2) checkpoint loaded without the package: logits, a pipeline answer, generation results."""
    loaded = run_in_fresh_environment("fresh_env_load.py", checkpoint, processor_kwargs, workdir, block)
    assert isinstance(loaded["answer"], str) and loaded["answer"]
    assert loaded["blocked_loaded"] == []
    return loaded


def test_loads_without_the_package_and_gives_identical_logits(tiny, tiny_checkpoint, tmp_path):
    model, processor = tiny
    images = [random_image(40, 160, seed=1), random_image(150, 60, seed=2)]  # wide and tall
    prompts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
    ) for question in ("What is here?", "Describe the picture, please.")]
    loaded = load_in_fresh_environment(tiny_checkpoint, {"images": images, "text": prompts}, tmp_path)
    inputs = processor(images=images, text=prompts)
    with torch.no_grad():
        expected = model(**inputs).logits
    assert (loaded["logits"] - expected).abs().max() <= 1e-5


def test_loads_without_trust_remote_code_once_the_package_is_imported(tiny, tiny_checkpoint):
    model, processor = tiny
    assert AutoConfig.from_pretrained(tiny_checkpoint).__class__ is visionllm_hf.VisionLLMConfig
    for auto_class in (AutoModel, AutoModelForImageTextToText):
        loaded = auto_class.from_pretrained(tiny_checkpoint)
        assert type(loaded) is visionllm_hf.VisionLLMForConditionalGeneration
    loaded_processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    assert type(loaded_processor) is visionllm_hf.VisionLLMProcessor
    image = random_image(64, 64)
    inputs = loaded_processor(images=[image], text=["<image> hi"])
    torch.testing.assert_close(inputs["pixel_values"], processor(images=[image], text=["<image> hi"])["pixel_values"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("encoder", ["visionllm_v2", "regiongpt"])
def test_region_encoder_checkpoints_round_trip_without_the_package(encoder, tmp_path):
    model, processor = build_with_region_encoder(encoder)
    checkpoint = tmp_path / "checkpoint"
    save_checkpoint(model, processor, checkpoint)
    assert "region_encoders.py" in {path.name for path in checkpoint.iterdir()}
    processor_kwargs = {
        "images": [random_image(50, 120, seed=1), random_image(90, 45, seed=2)],
        "text": ["<image> What is <region> next to <region>?", "<image> Describe it."],
        "regions": [[{"box": [5, 5, 60, 40]}, {"scribble": [[1, 1], [100, 45]]}], []],
    }
    loaded = load_in_fresh_environment(checkpoint, processor_kwargs, tmp_path)
    with torch.no_grad():
        expected = model(**processor(**processor_kwargs)).logits
    assert (loaded["logits"] - expected).abs().max() <= 1e-5


def test_routing_decoders_survive_a_fresh_environment_load(tiny, tiny_checkpoint, tmp_path):
    model, processor = tiny
    images = [random_image(50, 80, seed=1), random_image(64, 64, seed=2)]
    texts = ["<image> Find them.", "<image> Where is it?"]
    answers = ["a cat [DET], a man [POSE]", "it [SEG] at <LOC>"]
    scripts = [processor.tokenizer.encode(answer, add_special_tokens=False) for answer in answers]
    loaded = load_in_fresh_environment(
        tiny_checkpoint, {"images": images, "text": texts, "scripts": scripts}, tmp_path
    )
    inputs = processor(images=images, text=texts)
    expected = model.generate(**inputs, max_new_tokens=20, logits_processor=[ScriptedTokens(scripts, processor.tokenizer.eos_token_id)])
    assert [[r["routing"] for r in row] for row in loaded["results"]] == [["det", "pose"], ["seg", "loc"]]
    for theirs, ours in zip(loaded["results"], expected.results):
        for their_result, our_result in zip(theirs, ours):
            for key in ("boxes", "scores", "masks", "keypoints"):
                if key in our_result:
                    torch.testing.assert_close(their_result[key], our_result[key], atol=1e-5, rtol=0)
    processed = processor.post_process_generation(expected)
    assert [[o["label"] for o in p["objects"]] for p in loaded["objects"]] == [
        [o["label"] for o in p["objects"]] for p in processed
    ]


def test_shipped_demo_model_code_is_the_package_code(tmp_path):
    """The demo folder's code files are exactly what save_pretrained writes today (refresh: write_remote_code)."""
    expected = write_remote_code(tmp_path)
    assert set(expected) == FLAT_CODE_FILES
    shipped = sorted(path.name for path in DEMO_MODEL.glob("*.py"))
    assert shipped == expected, "refresh with visionllm_hf.builder.write_remote_code(DEMO_MODEL)"
    for name in expected:
        assert (DEMO_MODEL / name).read_bytes() == (tmp_path / name).read_bytes(), (
            f"demo_model/{name} differs from the package's: refresh with write_remote_code(DEMO_MODEL)"
        )


def test_shipped_demo_model_loads_without_the_package_and_gives_the_package_logits(tmp_path):
    images = [random_image(70, 110, seed=3), random_image(128, 128, seed=4)]
    texts = ["<image> How many shapes are there?", "<image> Segment <region>."]
    processor_kwargs = {"images": images, "text": texts, "regions": [[], [{"point": [64, 64]}]]}
    loaded = load_in_fresh_environment(DEMO_MODEL, processor_kwargs, tmp_path)
    model = visionllm_hf.VisionLLMForConditionalGeneration.from_pretrained(DEMO_MODEL).eval()
    processor = visionllm_hf.VisionLLMProcessor.from_pretrained(DEMO_MODEL)
    with torch.no_grad():
        expected = model(**processor(**processor_kwargs)).logits
    assert (loaded["logits"] - expected).abs().max() <= 1e-5


def test_a_checkpoint_with_video_support_runs_videos_and_masklets_without_the_package(tmp_path):
    from visionllm_hf.builder import build_tiny

    model, processor = build_tiny(seed=0, video_masks=True)
    model.eval()
    checkpoint = tmp_path / "checkpoint"
    save_checkpoint(model, processor, checkpoint)
    assert {"video_loading.py", "video_masklets.py"} <= {path.name for path in checkpoint.iterdir()}
    video = np.random.default_rng(5).integers(0, 256, (9, 40, 56, 3), dtype=np.uint8)
    texts = ["<image> What is here?", "<video> Segment the moving shape."]
    answers = ["a cat", "it [SEG]"]
    scripts = [processor.tokenizer.encode(answer, add_special_tokens=False) for answer in answers]
    processor_kwargs = {"images": [random_image(50, 80, seed=1)], "text": texts, "videos": [video]}
    loaded = load_in_fresh_environment(checkpoint, {**processor_kwargs, "scripts": scripts}, tmp_path)
    inputs = processor(**processor_kwargs)
    with torch.no_grad():
        expected_logits = model(**inputs).logits
    expected = model.generate(**inputs, max_new_tokens=20, logits_processor=[ScriptedTokens(scripts, processor.tokenizer.eos_token_id)])
    assert (loaded["logits"] - expected_logits).abs().max() <= 1e-5
    (theirs,) = [result for result in loaded["results"][1] if result["routing"] == "seg"]
    (ours,) = [result for result in expected.results[1] if result["routing"] == "seg"]
    assert theirs["video_masks"].shape == (1, 8, 64, 64)
    torch.testing.assert_close(theirs["video_masks"], ours["video_masks"], atol=1e-5, rtol=0)
