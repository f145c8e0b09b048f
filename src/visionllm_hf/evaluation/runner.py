"""Run a checkpoint over evaluation data and score every task the data and the model support.

The data is what `visionllm-hf train` takes (see `data.py`): a folder with the files `visionllm-hf synth` writes,
or `FORMAT=PATH[,images=DIR][,task=TASK]` specs of `coco`, `referring` and `conversation` files of any name. Every
file is read and checked before the model runs. A metric that cannot be scored (no data for it, no decoder for
it) is left out of `run()`'s result and its reason kept in `Evaluator.not_scored`.

Perception tasks give the model the answer's structure, as VisionLLM v2 evaluates them: detection asks every
category and forces the answer `c1 [DET], c2 [DET], ...`, pose forces `c [POSE]` for each category in the image,
REC forces `<expression> [DET]` (VisionLLM v2's grounding; `<expression> <LOC>` too when the model has a box
decoder) and RES `<expression> [SEG]`; the queries, KV cache and decoders then run
exactly as in free generation. Text tasks (counting, captions, region classification) generate freely.
"""

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data_formats import decode_mask
from ..modeling.configuration_visionllm import COCO_KEYPOINTS
from ..processing.templates import parse_category_answer, region_classification_prompt
from ..trainer.data import DETECTION_TEMPLATES, INTERACTIVE_TEMPLATES, POSE_TEMPLATES, REC_TEMPLATES, RES_TEMPLATES
from .data import CocoData, EvaluationData, encode_mask
from .forcing import forced_generation_kwargs
from .reliance import image_reliance
from .metrics import (
    accuracy,
    caption_scores,
    coco_average_precision,
    cumulative_iou,
    exact_match,
    precision_at_iou,
)

GOALS = {  # issue 21's, on held-out synthetic scenes; the table's status column is measured against them
    "counting exact match": 0.90,
    "region classification accuracy": 0.95,
    "REC P@0.5 <LOC>": 0.80,
    "REC P@0.5": 0.85,
    "detection AP50": 0.80,
    "mask AP50": 0.60,
    "keypoint AP": 0.50,
    "caption CIDEr": 1.5,
}
DETECTION_METRICS = ("detection AP", "detection AP50")
MASK_METRICS = ("mask AP", "mask AP50")
# the same boxes scored whatever category they name: far above "detection AP50" means the decoder finds the
# objects but names the wrong category (the README's "Synthetic scenes, the demo model and what it learns")
CLASS_AGNOSTIC = "detection AP50 class-agnostic"
KEYPOINT_METRICS = ("keypoint AP", "keypoint AP50")
CAPTION_METRICS = ("caption BLEU-4", "caption CIDEr")
NO_COUNTING = ("no counting question: tag conversations \"task\": \"counting\", or ask 'how many' with a whole "
               "number as the answer")


class Evaluator:
    """
    Arguments:
        model, processor: the checkpoint to evaluate.
        data (`str`, `list[str]` or `EvaluationData`):
            the evaluation folder (`instances.json`, `captions.json`, `conversations.json`, `referring.jsonl`,
            `images/`: those present), or `FORMAT=PATH[,images=DIR][,task=TASK]` specs (`coco`, `referring`,
            `conversation`), as `visionllm-hf train --data` takes them; read and checked here, before the model
            runs.
        max_images (`int`, *optional*): evaluate on the first images of each file only (when `data` is not read
            yet).
        batch_size (`int`, defaults to 8): samples per `generate` call.
        keypoint_sigma (`float`, defaults to 0.05): OKS sigma for every keypoint of other than the 17 COCO ones.
        reliance (`bool`, defaults to True): next to each text task's score, its image reliance (see
            `reliance.py`): how much likelier the reference answer is with the true image than with another one.

    After `run()`, `not_scored` maps each metric that could not be scored (and pose categories skipped) to why.

    ```python
    >>> evaluator = Evaluator(model, processor, ["coco=val.json,images=val/", "referring=refs.jsonl,images=val/"])
    >>> metrics = evaluator.run()  # {"detection AP": ..., "REC P@0.5": ...}
    >>> print(format_table(metrics, evaluator.not_scored))
    ```
    """

    def __init__(self, model, processor, data, max_images: int | None = None, batch_size: int = 8,
                 keypoint_sigma: float = 0.05, progress: bool = True, reliance: bool = True):
        self.model, self.processor = model.eval(), processor
        self.data = data if isinstance(data, EvaluationData) else EvaluationData(data, max_images)
        self.batch_size = batch_size
        self.keypoint_sigma = keypoint_sigma
        self.progress = progress
        self.reliance = reliance
        self.not_scored: dict[str, str] = {}

    def _skip(self, names: tuple, reason: str) -> dict:
        for name in names:
            self.not_scored[name] = reason
        return {}

    @property
    def decoders(self) -> set[str]:
        return set((self.model.config.routing_decoders or {}).values())

    # --- generation helpers ------------------------------------------------------------------------------
    def _prompt(self, question: str, images: int = 1) -> str:
        content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def _generate(self, requests: list[dict], desc: str) -> list[dict]:
        """`requests`: dicts with `image`, `question`, optional `answer` (forced) and `regions`."""
        outputs = []
        batches = range(0, len(requests), self.batch_size)
        for start in tqdm(batches, desc=desc, disable=not self.progress, leave=False):
            batch = requests[start : start + self.batch_size]
            inputs = self.processor(
                images=[[r["image"]] for r in batch],
                text=[self._prompt(r["question"]) for r in batch],
                regions=[[r.get("regions", [])] for r in batch] if any("regions" in r for r in batch) else None,
            )
            kwargs = {"max_new_tokens": 32, "do_sample": False}
            if any("answer" in r for r in batch):
                kwargs.update(forced_generation_kwargs(self.processor, [r.get("answer", "") for r in batch]))
            with torch.no_grad():
                generated = self.model.generate(**inputs, **kwargs)
            sizes = [(r["height"], r["width"]) for r in batch]
            if self.model.decoders is None:
                texts = self.processor.post_process_image_text_to_text(generated[:, inputs["input_ids"].shape[1]:])
                outputs += [{"text": text, "objects": []} for text in texts]
            else:
                # every candidate, for COCO AP (the defaults keep what a person would draw)
                outputs += self.processor.post_process_generation(
                    generated, target_sizes=sizes, threshold=0.0, nms_threshold=None
                )
        return outputs

    # --- tasks -------------------------------------------------------------------------------------------
    def detection(self) -> dict[str, float]:
        """
        Box AP (and class-agnostic box AP50) from the COCO file read for detection; mask AP from the one read for
        instance segmentation.
        """
        if "object" not in self.decoders:
            return self._skip(DETECTION_METRICS + MASK_METRICS, "the model has no object decoder ([DET])")
        metrics, detected = {}, {}
        for task, names, iou_type in (("detection", DETECTION_METRICS, "bbox"),
                                      ("instance_segmentation", MASK_METRICS, "segm")):
            data = self.data.coco.get(task)
            if data is None:
                self._skip(names, self.data.coco_skipped.get(task, "no COCO instances file (coco=FILE,images=DIR)"))
                continue
            if not data.coco.anns:
                self._skip(names, f"{data.spec.path.name}: no annotation in the evaluated images")
                continue
            if id(data) not in detected:
                detected[id(data)] = self._detect(data)
            scores = coco_average_precision(data.coco, detected[id(data)][iou_type], iou_type)
            metrics.update(zip(names, (scores["AP"], scores["AP50"])))
            if iou_type == "bbox":
                metrics[CLASS_AGNOSTIC] = coco_average_precision(
                    data.coco, detected[id(data)][iou_type], iou_type, use_categories=False)["AP50"]
        return metrics

    def _detect(self, data: CocoData) -> dict[str, list]:
        """Every category asked of every image, answers forced; COCO results `{"bbox": [...], "segm": [...]}`."""
        categories = data.coco.loadCats(data.coco.getCatIds())
        names = [c["name"] for c in categories]
        question = DETECTION_TEMPLATES[0].replace("<class>", ", ".join(names))
        answer = ", ".join(f"{name} [DET]" for name in names) + "."
        requests = [{**data.image(i), "question": question, "answer": answer} for i in data.image_ids]
        ids = {c["name"]: c["id"] for c in categories}
        results = {"bbox": [], "segm": []}
        for request, output in zip(requests, self._generate(requests, "detection")):
            for obj in output["objects"]:
                if obj["routing"] != "[DET]" or obj["label"] not in ids:
                    continue
                common = {"image_id": request["image_id"], "category_id": ids[obj["label"]], "score": obj["score"]}
                x1, y1, x2, y2 = obj["box"]
                results["bbox"].append({**common, "bbox": [x1, y1, x2 - x1, y2 - y1]})
                if obj["mask"] is not None:
                    results["segm"].append({**common, "segmentation": encode_mask(obj["mask"])})
        return results

    def pose(self) -> dict[str, float]:
        """
        Keypoint AP over the categories whose keypoint names the model predicts (all among
        `config.keypoint_names`, as training grows them): each category is scored on its own keypoints, taken from
        the model's by name; OKS sigmas are COCO's for the 17 COCO keypoints and `keypoint_sigma` for other sets.
        Categories with another keypoint set are grouped (COCOeval needs one set per run) and AP is the mean over
        all scored categories, as COCO averages over categories. Other categories are skipped, and said so.
        """
        if "keypoint" not in self.decoders:
            return self._skip(KEYPOINT_METRICS, "the model has no keypoint decoder ([POSE])")
        data = self.data.coco.get("pose")
        if data is None:
            return self._skip(KEYPOINT_METRICS, self.data.coco_skipped.get("pose", "no COCO file with keypoints"))
        names = list(self.model.config.keypoint_names)
        scored, skipped = pose_categories(data.coco, names)
        if skipped:
            self.not_scored["keypoint AP (skipped categories)"] = "; ".join(
                f"{_listed([repr(name) for name in categories])}: {reason}" for reason, categories in skipped.items()
            )
        if not scored:
            return self._skip(KEYPOINT_METRICS, f"no category has keypoints the model predicts ({_listed(names)})")
        requests = self._pose_requests(data, set(scored))
        if not requests:
            return self._skip(KEYPOINT_METRICS, "no annotation of the scored categories has keypoints in the "
                              "evaluated images")
        outputs = self._generate(requests, "pose")
        by_set: dict[tuple, list[int]] = {}
        for category_id, indices in scored.items():
            by_set.setdefault(tuple(indices), []).append(category_id)
        totals = {"AP": 0.0, "AP50": 0.0}
        for indices, category_ids in by_set.items():
            fill_missing_keypoints(data.coco, set(category_ids), len(indices))
            results = [
                {"image_id": request["image_id"], "category_id": request["category_id"], "score": obj["score"],
                 "keypoints": [v for i in indices for v in (*obj["keypoints"][i][:2], 2 if obj["keypoints"][i][2] > 0.5 else 0)]}
                for request, output in zip(requests, outputs) if request["category_id"] in category_ids
                for obj in output["objects"] if obj["routing"] == "[POSE]" and obj["keypoints"] is not None
            ]
            set_names = [names[i] for i in indices]
            sigmas = None if set_names == COCO_KEYPOINTS else [self.keypoint_sigma] * len(indices)
            scores = coco_average_precision(data.coco, results, "keypoints", keypoint_sigmas=sigmas,
                                            category_ids=sorted(category_ids))
            for key in totals:
                totals[key] += scores[key] * len(category_ids) / len(scored)
        return {"keypoint AP": totals["AP"], "keypoint AP50": totals["AP50"]}

    def _pose_requests(self, data: CocoData, category_ids: set) -> list[dict]:
        """One forced `<class> [POSE].` per image and scored category with keypoint annotations there."""
        requests = []
        for image_id in data.image_ids:
            annotations = data.coco.loadAnns(data.coco.getAnnIds(imgIds=image_id))
            present = {a["category_id"] for a in annotations if a.get("num_keypoints", 0) > 0}
            for category_id in sorted(present & category_ids):
                name = data.coco.cats[category_id]["name"]
                requests.append({**data.image(image_id), "category_id": category_id,
                                 "question": POSE_TEMPLATES[0].replace("<class>", name), "answer": f"{name} [POSE]."})
        return requests

    def grounding(self, records: list[dict], routing: str) -> list:
        """
        REC boxes, one per referring record: `<expression> <LOC>` reads the box decoder (u-LLaVA);
        `<expression> [DET]` the object decoder's highest-scoring box (VisionLLM v2's grounding).
        """
        requests = [{**r, "question": REC_TEMPLATES[0].format(expression=r["expression"]),
                     "answer": f"{r['expression']} {routing}."} for r in records]
        boxes = []
        for output in self._generate(requests, f"REC {routing}"):
            located = [o for o in output["objects"] if o["routing"] == routing]
            boxes.append(max(located, key=lambda o: o["score"])["box"] if located else None)
        return boxes

    def referring(self, decoders: set[str] | None = None) -> dict[str, float]:
        """REC P@0.5 through `[DET]` when there is an object decoder (else `<LOC>`), also through `<LOC>` when
        there are both; RES cumulative IoU through `[SEG]`, and with a region encoder interactive segmentation's
        (a click on each referred object, `[SEG]` answers)."""
        decoders = self.decoders if decoders is None else decoders
        return {**self._rec(decoders), **self._res(decoders)}

    def _rec(self, decoders: set[str]) -> dict[str, float]:
        records = self.data.referring.get("rec")
        if not decoders & {"object", "box"}:
            return self._skip(("REC P@0.5",), "the model has neither an object ([DET]) nor a box (<LOC>) decoder")
        if not records:
            return self._skip(("REC P@0.5",), self._no_referring("a 'box'"))
        truth_boxes = [r["box"] for r in records]
        metrics = {}
        if "object" in decoders:
            metrics["REC P@0.5"] = precision_at_iou(self.grounding(records, "[DET]"), truth_boxes)
        if "box" in decoders:
            name = "REC P@0.5 <LOC>" if metrics else "REC P@0.5"
            metrics[name] = precision_at_iou(self.grounding(records, "<LOC>"), truth_boxes)
        return metrics

    def _res(self, decoders: set[str]) -> dict[str, float]:
        names = ("RES cIoU", "interactive segmentation cIoU")
        records = self.data.referring.get("res")
        if "mask" not in decoders:
            return self._skip(names, "the model has no mask decoder ([SEG])")
        if not records:
            return self._skip(names, self._no_referring("a 'mask'"))
        truth = [decode_mask(r["mask"], r["height"], r["width"], r["folder"]) for r in records]
        res = [{**r, "question": RES_TEMPLATES[0].format(expression=r["expression"]),
                "answer": f"{r['expression']} [SEG]."} for r in records]
        metrics = {"RES cIoU": cumulative_iou(self._segment(res, "RES"), truth)}
        if self.model.config.region_encoder_type is None:
            return {**metrics, **self._skip(names[1:], "the model has no region encoder (clicks)")}
        clicked = [(r, mask) for r, mask in zip(records, truth) if mask.any()]
        clicks = [{**r, "question": INTERACTIVE_TEMPLATES[0], "regions": [{"point": _click(mask)}],
                   "answer": "[SEG]."} for r, mask in clicked]
        metrics["interactive segmentation cIoU"] = cumulative_iou(self._segment(clicks, "clicks"),
                                                                  [mask for _, mask in clicked])
        return metrics

    def _no_referring(self, what: str) -> str:
        if not self.data.has("referring"):
            return "no referring file (referring=FILE,images=DIR)"
        return f"no referring record (for this task) has {what}"

    def _segment(self, requests: list[dict], desc: str) -> list:
        """Each answer's first `[SEG]` mask (None when it has none)."""
        masks = []
        for output in self._generate(requests, desc):
            segmented = [o for o in output["objects"] if o["routing"] == "[SEG]"]
            masks.append(segmented[0]["mask"] if segmented else None)
        return masks

    def region_classification(self) -> dict[str, float]:
        """The category of each referred region (its box, else its mask), among the data's category names."""
        name = ("region classification accuracy",)
        if self.model.config.region_encoder_type is None:
            return self._skip(name, "the model has no region encoder")
        records = self.data.referring.get("region_classification")
        if not records:
            return self._skip(name, self._no_referring("a 'category' and a 'box' or 'mask'"))
        names = self._category_names(records)
        requests = [{**r, "question": region_classification_prompt(), "regions": [_region(r)]} for r in records]
        answers = [o["text"] for o in self._generate(requests, "region classification")]
        predicted = [parse_category_answer(a, names) for a in answers]
        metrics = {"region classification accuracy": accuracy(predicted, [r["category"] for r in records])}
        return metrics | self._reliance("region classification", [{**r, "answer": r["category"]} for r in requests])

    def _category_names(self, records: list[dict]) -> list[str]:
        """The COCO file's category names (when there is one) and those of the records."""
        data = self.data.coco.get("detection")
        names = [c["name"] for c in data.coco.loadCats(data.coco.getCatIds())] if data else []
        return list(dict.fromkeys(names + [r["category"] for r in records]))

    def counting(self) -> dict[str, float]:
        """Exact match of the answers to the counting questions of the conversation files."""
        if self.data.counting is None:
            return self._skip(("counting exact match",), "no conversation file (conversation=FILE,images=DIR)")
        if not self.data.counting:
            return self._skip(("counting exact match",), NO_COUNTING)
        answers = [o["text"] for o in self._generate(self.data.counting, "counting")]
        metrics = {"counting exact match": exact_match(answers, [r["reference"] for r in self.data.counting])}
        return metrics | self._reliance("counting", [{**r, "answer": r["reference"]} for r in self.data.counting])

    def captioning(self) -> dict[str, float]:
        """BLEU-4 and CIDEr of a free caption of each image of the COCO captions file."""
        data = self.data.coco.get("caption")
        if data is None:
            return self._skip(CAPTION_METRICS, "no COCO captions file (coco=FILE,images=DIR,task=caption)")
        requests = [{**data.image(i), "question": "Describe the image briefly."} for i in data.image_ids]
        answers = [o["text"] for o in self._generate(requests, "captioning")]
        references = [[a["caption"] for a in data.coco.loadAnns(data.coco.getAnnIds(imgIds=i))]
                      for i in data.image_ids]
        metrics = {f"caption {k}": v for k, v in caption_scores(answers, references).items()}
        forced = [{**r, "answer": refs[0]} for r, refs in zip(requests, references) if refs]
        return metrics | self._reliance("caption", forced)

    def _reliance(self, task: str, requests: list[dict]) -> dict[str, float]:
        """`{"<task> image reliance": nats per answer token}` (see `reliance.py`), when asked for and computable."""
        if not self.reliance:
            return {}
        value = image_reliance(self.model, self.processor, requests)
        if value is None:
            return self._skip((f"{task} image reliance",), "every question is about one image: no other to swap in")
        return {f"{task} image reliance": value}

    def run(self) -> dict[str, float]:
        """Every metric the data and the model support, `{name: value}`; the others in `self.not_scored`."""
        self.not_scored = {}
        metrics = {}
        for task in (self.detection, self.pose, self.referring, self.region_classification, self.counting,
                     self.captioning):
            metrics.update(task())
        return {name: round(value, 4) for name, value in metrics.items()}


def pose_categories(coco, names: list[str]) -> tuple[dict[int, list[int]], dict[str, list[str]]]:
    """
    The categories the model's keypoints (`names`) cover, each with the indices of its own keypoints among the
    model's, in the category's order; and the others by why they are skipped (`{reason: [category names]}`).
    A category that names no keypoints is read by position as `names` when its annotations have as many (as
    training does).
    """
    scored, skipped = {}, {}
    for category in coco.loadCats(coco.getCatIds()):
        indices, reason = _pose_keypoint_indices(coco, category, names)
        if reason is None:
            scored[category["id"]] = indices
        else:
            skipped.setdefault(reason, []).append(category["name"])
    return scored, skipped


def _pose_keypoint_indices(coco, category: dict, names: list[str]) -> tuple[list[int] | None, str | None]:
    declared = category.get("keypoints") or None
    if declared is not None:
        unknown = [str(name) for name in declared if name not in names]
        if unknown:
            return None, f"keypoints the model does not predict ({_listed(unknown)})"
        return [names.index(name) for name in declared], None
    annotated = [a for a in coco.loadAnns(coco.getAnnIds(catIds=category["id"])) if a.get("num_keypoints", 0)]
    if not annotated:
        return None, "no keypoints"
    counts = sorted({len(a.get("keypoints", [])) // 3 for a in annotated})
    if counts != [len(names)]:
        return None, f"no keypoint names, and {'/'.join(map(str, counts))} keypoints per annotation, not {len(names)}"
    return list(range(len(names))), None


def _listed(items: list[str], limit: int = 8) -> str:
    """`a, b, c` with at most `limit` items and how many more."""
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def fill_missing_keypoints(coco, category_ids: set, count: int):
    """Annotations of scored categories without keypoints get `count` unlabelled ones (COCOeval reads them all)."""
    for annotation in coco.loadAnns(coco.getAnnIds(catIds=sorted(category_ids))):
        if not isinstance(annotation.get("keypoints"), list):
            annotation["keypoints"], annotation["num_keypoints"] = [0] * (3 * count), 0


def _region(record: dict) -> dict:
    if "box" in record:
        return {"box": record["box"]}
    return {"mask": decode_mask(record["mask"], record["height"], record["width"], record["folder"])}


def _click(mask: np.ndarray) -> list[float]:
    """Where a person would click on an object: its mask pixel nearest the mask's centroid (pixel centre)."""
    rows, columns = np.nonzero(mask)
    nearest = np.argmin((rows - rows.mean()) ** 2 + (columns - columns.mean()) ** 2)
    return [float(columns[nearest]) + 0.5, float(rows[nearest]) + 0.5]


def format_table(metrics: dict[str, float], not_scored: dict[str, str] | None = None) -> str:
    """The scored metrics with their goals, then each metric not scored and why."""
    width = max([34, *(len(name) + 2 for name in [*metrics, *(not_scored or {})])])
    lines = [f"{'metric':<{width}}{'value':>8}{'goal':>8}  status"]
    for name, value in metrics.items():
        goal = GOALS.get(name)
        status = "" if goal is None else ("met" if value >= goal else f"short by {goal - value:.3f}")
        lines.append(f"{name:<{width}}{value:>8.3f}{'' if goal is None else f'{goal:>8.2f}':>8}  {status}")
    for name, reason in (not_scored or {}).items():
        lines.append(f"{name:<{width}}{'-':>8}{'':>8}  not scored: {reason}")
    return "\n".join(lines)


__all__ = ["GOALS", "Evaluator", "fill_missing_keypoints", "format_table", "pose_categories"]
