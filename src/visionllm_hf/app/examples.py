"""The example images the page offers: `visionllm-hf demo`'s held-out synthetic scenes and scikit-image's photos."""

from dataclasses import dataclass

from PIL import Image

from ..demo import demo_inputs
from ..synthetic import KINDS


@dataclass
class Example:
    """One example: its name, image, and the expression grounding is asked with (a scene's largest shape)."""

    name: str
    image: Image.Image
    expression: str


def example_images(num_scenes: int = 3) -> list[Example]:
    """The demo's inputs (the photos only when scikit-image, the `demo` extra, is installed)."""
    return [Example(item["name"], item["image"], item["expression"]) for item in demo_inputs(num_scenes)]


DEFAULT_CATEGORIES = ", ".join(KINDS)  # what the shipped demo model was trained to find

__all__ = ["DEFAULT_CATEGORIES", "Example", "example_images"]
