"""`--data` specs, `FORMAT=PATH[,images=DIR][,task=TASK][,ratio=R][,...]`, read the same way by `train`,
`validate-data` and `eval`. Light on purpose: no torch, so a command can check its arguments in milliseconds.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

SOURCE_OPTIONS = {  # format -> the options its spec takes besides images= and ratio=, with their types
    "conversation": {"task": str},
    "coco": {"task": str, "max_categories": int},
    "referring": {"task": str, "category_set": str},
    "generation": {"task": str},
    "v1detection": {"max_categories": int},  # VisionLLM v1 checkpoints only
}


@dataclass
class DataSpec:
    """One parsed `--data` spec: the format, the file, the image folder, the format's options and the ratio."""

    text: str
    format: str
    path: str
    images: str | None = None
    options: dict = field(default_factory=dict)
    ratio: float = 1.0


def parse_data_spec_text(spec: str) -> DataSpec:
    """Every check a spec allows without reading its file: format, options, their types, the image folder."""
    kind, path, settings = split_data_spec(spec)
    ratio = spec_number(spec, "ratio", settings.pop("ratio", "1"), float)
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"data spec '{spec}': ratio={ratio} must be a finite number >= 0")
    images = settings.pop("images", None)
    if images is not None and not Path(images).is_dir():
        raise ValueError(f"data spec '{spec}': the image folder images={images} does not exist")
    if kind in ("coco", "v1detection") and images is None:
        raise ValueError(f"data spec '{spec}': COCO data needs images=DIR (the folder of the file_names)")
    options = {key: spec_number(spec, key, value, SOURCE_OPTIONS[kind][key]) for key, value in settings.items()}
    return DataSpec(spec, kind, path, images, options, ratio)


def split_data_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """`coco=ann.json,images=dir` -> `("coco", "ann.json", {"images": "dir"})`, unknown options refused."""
    first, *options = spec.split(",")
    kind, _, path = first.partition("=")
    if kind not in SOURCE_OPTIONS or not path:
        raise ValueError(f"data spec '{spec}' must start with one of {sorted(SOURCE_OPTIONS)}=PATH")
    malformed = [option for option in options if "=" not in option or not option.partition("=")[2]]
    if malformed:
        raise ValueError(f"data spec '{spec}': option '{malformed[0]}' is not KEY=VALUE")
    settings = dict(option.split("=", 1) for option in options)
    known = {"images", "ratio", *SOURCE_OPTIONS[kind]}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"data spec '{spec}': {kind} data takes no option '{unknown[0]}'; it takes {sorted(known)}")
    return kind, path, settings


def spec_number(spec: str, key: str, value: str, kind: type):
    try:
        return kind(value)
    except ValueError:
        wanted = "an integer" if kind is int else "a number"
        raise ValueError(f"data spec '{spec}': {key}={value} is not {wanted}") from None


__all__ = ["SOURCE_OPTIONS", "DataSpec", "parse_data_spec_text", "spec_number", "split_data_spec"]
