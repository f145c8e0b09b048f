"""Every code block of README.md runs as written, in order, so a snippet that stops working fails CI.

Python blocks run in one namespace, bash blocks in a shell, both in a working folder that holds what the
README names: `src/` and `benches/` of this repository, and tiny stand-ins saved under the hub ids the README
uses (`openai/clip-vit-large-patch14-336`, `lmsys/vicuna-7b-v1.5`, `runwayml/stable-diffusion-v1-5`,
`timbrooks/instruct-pix2pix`), which transformers and diffusers load as local folders. Two things change:
`--max_steps N` becomes `--max_steps 2` (the README's step counts are for real runs), and the two set-up
commands are left to CI (`.ci/run` runs the test command; of the demo command, `visionllm-hf demo` runs here).
Output blocks (```text) are compared with what their command printed.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaForCausalLM

from visionllm_hf.builder import train_tiny_tokenizer
from visionllm_hf.builder.presets import tiny_text_config, tiny_vision_config

from .test_image_generation import save_tiny_pipeline

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def readme_blocks() -> list[tuple[str, str, int]]:
    """(language, code, line) of every fenced block of README.md, in order."""
    text = (ROOT / "README.md").read_text()
    return [(m.group(1), m.group(2), text[: m.start()].count("\n") + 1) for m in BLOCK.finditer(text)]


def save_stand_ins(root: Path):
    """Tiny checkpoints under the hub ids the README names (transformers and diffusers read local folders first)."""
    torch.manual_seed(0)
    CLIPVisionModel(tiny_vision_config()).save_pretrained(root / "openai" / "clip-vit-large-patch14-336")
    tokenizer = train_tiny_tokenizer()
    llm = root / "lmsys" / "vicuna-7b-v1.5"
    LlamaForCausalLM(tiny_text_config(len(tokenizer))).save_pretrained(llm)
    tokenizer.save_pretrained(llm)
    save_tiny_pipeline(root / "runwayml" / "stable-diffusion-v1-5", editing=False)
    save_tiny_pipeline(root / "timbrooks" / "instruct-pix2pix", editing=True)
    assert isinstance(CLIPVisionConfig.from_pretrained(root / "openai" / "clip-vit-large-patch14-336"), CLIPVisionConfig)


def shell_command(code: str) -> str | None:
    """The command a bash block runs here (None: a set-up command CI runs itself)."""
    if "python3 -m venv" in code:
        command = code.split("&&")[-1].strip()
        return None if command == "pytest" else command
    return re.sub(r"--max_steps \d+", "--max_steps 2", code)


def run_shell(code: str, folder: Path, line: int) -> str:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-e", "-c", code], cwd=folder, env=environment, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, f"README line {line}:\n{code}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_every_readme_block_runs_as_written(tmp_path, monkeypatch):
    for name in ("src", "benches"):
        (tmp_path / name).symlink_to(ROOT / name)
    save_stand_ins(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace, printed, counts = {"__name__": "readme"}, "", {"python": 0, "bash": 0, "text": 0}
    for language, code, line in readme_blocks():
        if language == "python":
            exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 (our own README)
        elif language == "bash":
            command = shell_command(code)
            if command is None:
                continue
            printed = run_shell(command, tmp_path, line)
        elif language == "text":  # output pasted from the command of the block before it
            assert code.strip() in printed, f"README line {line} is not what the command printed:\n{printed}"
        else:
            continue
        counts[language] += 1
    assert counts["python"] >= 6 and counts["bash"] >= 9 and counts["text"] >= 1, counts


def test_readme_lists_the_blocks_this_test_runs():
    """Every block is python, bash, text (checked output) or a plain block of printed output (no language)."""
    languages = {language for language, _, _ in readme_blocks()}
    assert languages <= {"python", "bash", "text"}, languages
