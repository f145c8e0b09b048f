"""The transformers range setup.py declares is the one README, model cards and CI speak of."""

import re
from pathlib import Path

import transformers
from packaging.specifiers import SpecifierSet

from visionllm_hf.builder import build_tiny
from visionllm_hf.model_cards import render_model_card

ROOT = Path(__file__).resolve().parent.parent


def declared_range() -> str:
    return re.search(r'"transformers(>=[0-9.]+,<[0-9.]+)"', (ROOT / "setup.py").read_text()).group(1)


def test_readme_states_the_declared_range_and_ci_tests_its_lowest_version():
    declared = declared_range()
    assert f"transformers{declared}" in (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "setup.py" in ci and 'transformers==$lowest' in ci


def test_model_cards_state_the_declared_range():
    model, _ = build_tiny(seed=0)
    card = str(render_model_card(model, model_name="tiny"))
    assert f"transformers{declared_range()}" in card


def test_the_installed_transformers_is_inside_the_declared_range():
    assert transformers.__version__ in SpecifierSet(declared_range())
