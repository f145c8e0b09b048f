"""Synthetic scenes with exact ground truth for every task, written in the formats users bring."""

from .export import CATEGORIES, write_dataset
from .scenes import COLOURS, KEYPOINTS, KINDS, Scene, Shape, make_scene

__all__ = ["CATEGORIES", "COLOURS", "KEYPOINTS", "KINDS", "Scene", "Shape", "make_scene", "write_dataset"]
