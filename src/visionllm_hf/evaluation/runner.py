"""Run a checkpoint over an evaluation folder and score every task.

The folder holds what `visionllm-hf synth` (or a user) writes: `images/`, `instances.json` (COCO, with masks and
keypoints), `captions.json`, `conversations.json` and `referring.jsonl`.

Perception tasks give the model the answer's structure, as VisionLLM v2 evaluates them: detection asks every
category and forces the answer `c1 [DET], c2 [DET], ...`, pose forces `c [POSE]` for each category in the image,
REC forces `<expression> [DET]` (VisionLLM v2's grounding; `<expression> <LOC>` too when the model has a box
decoder) and RES `<expression> [SEG]`; the queries, KV cache and decoders then run
exactly as in free generation. Text tasks (counting, captions, region classification) generate freely.
"""

import json
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from tqdm.auto import tqdm

from ..processing.templates import parse_category_answer, region_classification_prompt
from ..trainer.data import DETECTION_TEMPLATES, INTERACTIVE_TEMPLATES, POSE_TEMPLATES, REC_TEMPLATES, RES_TEMPLATES
from .forcing import forced_generation_kwargs
from .metrics import (
    accuracy,
    caption_scores,
    coco_average_precision,
    cumulative_iou,
    exact_match,
    precision_at_iou,
)

GOALS = {
    "REC P@0.5": 0.8,
    "detection AP50": 0.6,
    "mask AP50": 0.5,
    "keypoint AP": 0.5,
    "region classification accuracy": 0.9,
    "counting exact match": 0.8,
}


class Evaluator:
    """
    Arguments:
        model, processor: the checkpoint to evaluate.
        root (`str`): the evaluation folder.
        max_images (`int`, *optional*): evaluate on the first images only.
        batch_size (`int`, defaults to 8): samples per `generate` call.
        keypoint_sigma (`float`, defaults to 0.05): OKS sigma for every keypoint of non-COCO categories.
    """

    def __init__(self, model, processor, root: str, max_images: int | None = None, batch_size: int = 8,
                 keypoint_sigma: float = 0.05, progress: bool = True):
        self.model, self.processor = model.eval(), processor
        self.root = Path(root)
        self.coco = _quiet_coco(self.root / "instances.json")
        self.image_ids = sorted(self.coco.getImgIds())[:max_images]
        self.batch_size = batch_size
        self.keypoint_sigma = keypoint_sigma
        self.progress = progress

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
                outputs += self.processor.post_process_generation(generated, target_sizes=sizes)
        return outputs

    def _image(self, image_id: int) -> dict:
        info = self.coco.loadImgs(image_id)[0]
        return {"image": str(self.root / "images" / info["file_name"]), "height": info["height"],
                "width": info["width"], "image_id": image_id}

    # --- tasks -------------------------------------------------------------------------------------------
    def detection(self) -> dict[str, float]:
        categories = self.coco.loadCats(self.coco.getCatIds())
        names = [c["name"] for c in categories]
        question = DETECTION_TEMPLATES[0].replace("<class>", ", ".join(names))
        answer = ", ".join(f"{name} [DET]" for name in names) + "."
        requests = [{**self._image(i), "question": question, "answer": answer} for i in self.image_ids]
        ids = {c["name"]: c["id"] for c in categories}
        boxes, masks = [], []
        for request, output in zip(requests, self._generate(requests, "detection")):
            for obj in output["objects"]:
                if obj["routing"] != "[DET]" or obj["label"] not in ids:
                    continue
                common = {"image_id": request["image_id"], "category_id": ids[obj["label"]], "score": obj["score"]}
                x1, y1, x2, y2 = obj["box"]
                boxes.append({**common, "bbox": [x1, y1, x2 - x1, y2 - y1]})
                if obj["mask"] is not None:
                    rle = coco_mask.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
                    rle["counts"] = rle["counts"].decode("ascii")
                    masks.append({**common, "segmentation": rle})
        box_ap, mask_ap = coco_average_precision(self.coco, boxes, "bbox"), coco_average_precision(self.coco, masks, "segm")
        return {"detection AP": box_ap["AP"], "detection AP50": box_ap["AP50"],
                "mask AP": mask_ap["AP"], "mask AP50": mask_ap["AP50"]}

    def pose(self) -> dict[str, float]:
        """Keypoint AP; OKS sigmas are COCO's for 17 keypoints and `keypoint_sigma` for other sets."""
        requests = []
        for image_id in self.image_ids:
            annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id))
            for category_id in sorted({a["category_id"] for a in annotations if a.get("num_keypoints", 0)}):
                name = self.coco.loadCats(category_id)[0]["name"]
                requests.append({**self._image(image_id), "category_id": category_id,
                                 "question": POSE_TEMPLATES[0].replace("<class>", name), "answer": f"{name} [POSE]."})
        results = []
        for request, output in zip(requests, self._generate(requests, "pose")):
            for obj in output["objects"]:
                if obj["routing"] == "[POSE]" and obj["keypoints"] is not None:
                    flat = [v for x, y, visible in obj["keypoints"] for v in (x, y, 2 if visible > 0.5 else 0)]
                    results.append({"image_id": request["image_id"], "category_id": request["category_id"],
                                    "keypoints": flat, "score": obj["score"]})
        count = len(self.coco.loadCats(self.coco.getCatIds())[0].get("keypoints", [])) or 17
        if count != len(self.model.config.keypoint_names):
            raise ValueError(
                f"the model predicts {len(self.model.config.keypoint_names)} keypoints but the data has {count}"
            )
        sigmas = None if count == 17 else [self.keypoint_sigma] * count
        scores = coco_average_precision(self.coco, results, "keypoints", keypoint_sigmas=sigmas)
        return {"keypoint AP": scores["AP"], "keypoint AP50": scores["AP50"]}

    def _referring(self) -> list[dict]:
        allowed = {self.coco.loadImgs(i)[0]["file_name"] for i in self.image_ids}
        lines = (self.root / "referring.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        by_name = {self.coco.loadImgs(i)[0]["file_name"]: i for i in self.image_ids}
        return [{**record, **self._image(by_name[record["image"]])} for record in records if record["image"] in allowed]

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

    def referring(self, decoders: set[str]) -> dict[str, float]:
        """REC P@0.5 through `[DET]` when there is an object decoder (else `<LOC>`), also through `<LOC>` when
        there are both; RES cumulative IoU through `[SEG]`, and with a region encoder interactive segmentation's
        (a click on each referred object, `[SEG]` answers)."""
        records = self._referring()
        truth_boxes = [r["box"] for r in records]
        metrics = {}
        if "object" in decoders:
            metrics["REC P@0.5"] = precision_at_iou(self.grounding(records, "[DET]"), truth_boxes)
        if "box" in decoders:
            name = "REC P@0.5 <LOC>" if metrics else "REC P@0.5"
            metrics[name] = precision_at_iou(self.grounding(records, "<LOC>"), truth_boxes)
        if "mask" in decoders:
            truth = [coco_mask.decode(r["mask"]) for r in records]
            res = [{**r, "question": RES_TEMPLATES[0].format(expression=r["expression"]),
                    "answer": f"{r['expression']} [SEG]."} for r in records]
            metrics["RES cIoU"] = cumulative_iou(self._segment(res, "RES"), truth)
            if self.model.config.region_encoder_type is not None:
                clicks = [{**r, "question": INTERACTIVE_TEMPLATES[0], "regions": [{"point": _click(mask)}],
                           "answer": "[SEG]."} for r, mask in zip(records, truth)]
                metrics["interactive segmentation cIoU"] = cumulative_iou(self._segment(clicks, "clicks"), truth)
        return metrics

    def _segment(self, requests: list[dict], desc: str) -> list:
        """Each answer's first `[SEG]` mask (None when it has none)."""
        masks = []
        for output in self._generate(requests, desc):
            segmented = [o for o in output["objects"] if o["routing"] == "[SEG]"]
            masks.append(segmented[0]["mask"] if segmented else None)
        return masks

    def region_classification(self) -> dict[str, float]:
        records = self._referring()
        names = [c["name"] for c in self.coco.loadCats(self.coco.getCatIds())]
        requests = [{**r, "question": region_classification_prompt(), "regions": [{"box": r["box"]}]} for r in records]
        answers = [o["text"] for o in self._generate(requests, "region classification")]
        predicted = [parse_category_answer(a, names) for a in answers]
        return {"region classification accuracy": accuracy(predicted, [r["category"] for r in records])}

    def counting(self) -> dict[str, float]:
        allowed = {self.coco.loadImgs(i)[0]["file_name"]: i for i in self.image_ids}
        records = [r for r in json.loads((self.root / "conversations.json").read_text())
                   if r.get("task") == "counting" and r["image"] in allowed]
        requests = [{**self._image(allowed[r["image"]]),
                     "question": r["conversations"][0]["value"].replace("<image>\n", "")} for r in records]
        answers = [o["text"] for o in self._generate(requests, "counting")]
        return {"counting exact match": exact_match(answers, [r["conversations"][1]["value"] for r in records])}

    def captioning(self) -> dict[str, float]:
        captions = _quiet_coco(self.root / "captions.json")
        requests = [{**self._image(i), "question": "Describe the image briefly."} for i in self.image_ids]
        answers = [o["text"] for o in self._generate(requests, "captioning")]
        references = [[a["caption"] for a in captions.loadAnns(captions.getAnnIds(imgIds=i))] for i in self.image_ids]
        return {f"caption {k}": v for k, v in caption_scores(answers, references).items()}

    def run(self) -> dict[str, float]:
        metrics = {}
        decoders = set((self.model.config.routing_decoders or {}).values())
        if "object" in decoders:
            metrics.update(self.detection())
        if "keypoint" in decoders:
            metrics.update(self.pose())
        if decoders & {"object", "box", "mask"}:
            metrics.update(self.referring(decoders))
        if self.model.config.region_encoder_type is not None:
            metrics.update(self.region_classification())
        metrics.update(self.counting())
        metrics.update(self.captioning())
        return {name: round(value, 4) for name, value in metrics.items()}


def _click(mask: np.ndarray) -> list[float]:
    """Where a person would click on an object: its mask pixel nearest the mask's centroid (pixel centre)."""
    rows, columns = np.nonzero(mask)
    nearest = np.argmin((rows - rows.mean()) ** 2 + (columns - columns.mean()) ** 2)
    return [float(columns[nearest]) + 0.5, float(rows[nearest]) + 0.5]


def _quiet_coco(path: Path) -> COCO:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def format_table(metrics: dict[str, float]) -> str:
    lines = [f"{'metric':<34}{'value':>8}{'goal':>8}  status"]
    for name, value in metrics.items():
        goal = GOALS.get(name)
        status = "" if goal is None else ("met" if value >= goal else f"short by {goal - value:.3f}")
        lines.append(f"{name:<34}{value:>8.3f}{'' if goal is None else f'{goal:>8.2f}':>8}  {status}")
    return "\n".join(lines)


__all__ = ["GOALS", "Evaluator", "format_table"]
