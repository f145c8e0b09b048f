"""The command answers `--help` at once (nothing heavy imported), names itself, and checks `--model` before loading."""

import subprocess
import sys

import pytest

from visionllm_hf.cli import main

COMMANDS = ["build", "demo", "synth", "validate-data", "train", "eval", "predict"]


def help_run(*arguments: str) -> tuple[str, list[str]]:
    """What `visionllm-hf ARGUMENTS` prints, and which heavy modules it imported to print it."""
    script = (
        "import sys, visionllm_hf_cli\n"
        f"try:\n    visionllm_hf_cli.main({list(arguments)!r})\nexcept SystemExit:\n    pass\n"
        "print('IMPORTED', [name for name in ('torch', 'transformers', 'visionllm_hf') if name in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    output, _, imported = result.stdout.rpartition("IMPORTED ")
    return output, eval(imported)  # noqa: S307 (our own subprocess's list)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_nothing_heavy_and_names_the_command(command):
    output, imported = help_run(*([command] if command else []), "--help")
    assert imported == [], f"--help imported {imported}: it must answer at once"
    usage = output.splitlines()[0]
    assert usage.startswith(f"usage: visionllm-hf {command}" if command else "usage: visionllm-hf")
    if command is None:
        assert all(name in output for name in COMMANDS)


def test_train_help_leads_with_the_projects_options():
    output, _ = help_run("train", "--help")
    assert output.index("--data") < output.index("--learning_rate_scale") < output.index("TrainingArguments")
    assert "--help-all" in output


def test_every_training_flag_train_help_names_exists():
    """The common TrainingArguments flags listed by `train --help` (written out so --help stays fast) are real."""
    import re

    from transformers import TrainingArguments

    from visionllm_hf_cli import TRAIN_HELP_TAIL

    named = set(re.findall(r"--(\w+)", TRAIN_HELP_TAIL)) - {"help"}
    assert named <= set(TrainingArguments.__dataclass_fields__), named - set(TrainingArguments.__dataclass_fields__)


@pytest.mark.parametrize("command", [["eval", "--data", "x"], ["predict", "--inputs", "x", "--task", "caption",
                                                                "--out", "y"], ["demo"]])
def test_a_missing_model_folder_is_named_before_anything_loads(command, tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        main([command[0], "--model", str(tmp_path / "no-such-checkpoint"), *command[1:]])
