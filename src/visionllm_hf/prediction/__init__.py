"""Prediction: run a checkpoint over your own images, on one machine or many (`visionllm-hf predict`).

```python
>>> from visionllm_hf.prediction import predict, read_inputs
>>> inputs = read_inputs("photos/")                     # a folder, a glob, COCO JSON, JSON lines or a dataset
>>> for result in predict(model, processor, inputs.records, task="detection", categories=["cat", "dog"]):
...     print(result["id"], result["text_labels"], result["boxes"])
```

`run_prediction` is the command line's work: batches, resumable JSON lines, COCO results, errors per image,
annotated pictures, and sharding across the processes of `torchrun` / `accelerate launch`.
"""

from .inputs import DatasetImage, PredictionInput, PredictionInputs, open_image, read_inputs
from .outputs import PredictionFiles, category_ids, coco_results, json_line, mask_to_rle
from .predictor import GenerationSettings, predict, predict_batches, task_name
from .runner import resolve_dtype, run_prediction

__all__ = [
    "DatasetImage",
    "GenerationSettings",
    "PredictionFiles",
    "PredictionInput",
    "PredictionInputs",
    "category_ids",
    "coco_results",
    "json_line",
    "mask_to_rle",
    "open_image",
    "predict",
    "predict_batches",
    "read_inputs",
    "resolve_dtype",
    "run_prediction",
    "task_name",
]
