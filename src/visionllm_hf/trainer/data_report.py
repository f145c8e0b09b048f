"""`visionllm-hf validate-data`: what a set of `--data` specs holds, and every problem in it, without a model.

For each spec: the samples each task would get, the categories with their instance counts, the keypoint names of
each category, the mask forms, the counting questions (tagged or inferred), then every problem the data checks
find (the same checks `train` and `eval` run). Seconds, even for COCO-sized files.
"""

from collections import Counter
from pathlib import Path

from ..data_formats import is_counting_question, mask_form
from .data_checks import DataError, check_source, read_json, read_json_lines
from .data_specs import parse_data_spec_text


def describe_data(specs: list[str]) -> tuple[str, int]:
    """The report of every spec, and the number of errors found (0: `train` and `eval` will read it all)."""
    lines, errors = [], 0
    for spec in specs:
        try:
            parsed = parse_data_spec_text(spec)
        except ValueError as error:
            lines += [spec, f"  error: {error}"]
            errors += 1
            continue
        images = parsed.images or str(Path(parsed.path).parent)
        lines.append(f"{parsed.format}={parsed.path} (images: {images})")
        task = parsed.options.get("task")
        problems = check_source("coco" if parsed.format == "v1detection" else parsed.format, parsed.path, images, task)
        try:
            lines += [f"  {line}" for line in _summary(parsed.format, parsed.path)]
        except DataError:
            pass  # the file does not read: its problems say why
        found = [problem for problem in problems if problem.level == "error"]
        errors += len(found)
        lines += [f"  {problem.level}: {problem.describe(with_file=False)}" for problem in problems]
        lines.append(f"  {len(found)} error{'s' if len(found) != 1 else ''}, "
                     f"{len(problems) - len(found)} warning{'s' if len(problems) - len(found) != 1 else ''}")
    return "\n".join(lines), errors


def _summary(kind: str, path: str) -> list[str]:
    if kind in ("coco", "v1detection"):
        return _coco_summary(read_json(path))
    if kind == "referring":
        return _referring_summary([record for _, record in read_json_lines(path)])
    if kind == "conversation":
        return _conversation_summary(read_json(path))
    return [f"{len(read_json_lines(path))} records"]


def _coco_summary(data: dict) -> list[str]:
    if not isinstance(data, dict):
        return []
    annotations = [a for a in data.get("annotations") or [] if isinstance(a, dict)]
    categories = {c.get("id"): c for c in data.get("categories") or [] if isinstance(c, dict)}
    with_masks = [a for a in annotations if a.get("segmentation")]
    with_keypoints = [a for a in annotations if a.get("num_keypoints")]
    with_captions = [a for a in annotations if "caption" in a]
    tasks = [f"detection: {len([a for a in annotations if 'bbox' in a])} boxes"]
    if with_masks:
        forms = Counter(mask_form(a["segmentation"]) or "unreadable" for a in with_masks)
        tasks.append(f"instance_segmentation / interactive_segmentation: {len(with_masks)} masks ({_counted(forms)})")
    if with_keypoints:
        tasks.append(f"pose: {len(with_keypoints)} instances with keypoints")
    if with_captions:
        tasks = [f"caption: {len(with_captions)} captions"]
    per_category = Counter(a.get("category_id") for a in annotations if "caption" not in a)
    lines = [f"{len(data.get('images') or [])} images, {len(annotations)} annotations", "tasks: " + "; ".join(tasks)]
    if categories:
        lines.append("categories: " + ", ".join(
            f"{c.get('name')} ({per_category.get(i, 0)})" for i, c in sorted(categories.items(), key=str)))
        lines += [f"keypoints of {c.get('name')}: {', '.join(map(str, c['keypoints']))}"
                  for c in categories.values() if c.get("keypoints")]
    return lines


def _referring_summary(records: list) -> list[str]:
    records = [record for record in records if isinstance(record, dict)]
    boxes = sum("box" in record for record in records)
    masks = Counter(mask_form(record["mask"]) or "unreadable" for record in records if "mask" in record)
    categories = Counter(record["category"] for record in records if "category" in record)
    lines = [f"{len(records)} records",
             f"tasks: rec / grounding: {boxes} with a box; res: {sum(masks.values())} with a mask ({_counted(masks)}); "
             f"region_caption: {sum(('box' in r or 'mask' in r) for r in records)} with a region; "
             f"region_classification: {sum(categories.values())} with a category"]
    if categories:
        lines.append("categories: " + ", ".join(f"{name} ({count})" for name, count in sorted(categories.items())))
    return lines


def _conversation_summary(records) -> list[str]:
    records = [record for record in records if isinstance(record, dict)] if isinstance(records, list) else []
    counting = [record for record in records if is_counting_question(record)]
    tagged = sum(record.get("task") == "counting" for record in counting)
    return [f"{len(records)} records; counting questions (scored by eval): {len(counting)} "
            f"({tagged} tagged \"task\": \"counting\", {len(counting) - tagged} recognised by question and answer)"]


def _counted(counts: Counter) -> str:
    return ", ".join(f"{count} {name}" for name, count in counts.most_common()) or "none"


__all__ = ["describe_data"]
