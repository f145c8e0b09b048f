"""`visionllm-hf pretrain`: stage 0, the parts every VisionLLM paper starts from, for work without downloads.

Every system in the papers assembles a *pretrained* CLIP tower and a *pretrained* LLM, then aligns them. Offline
we make both on our own data first, with transformers' own classes and Trainer:

- `clip`: transformers' `CLIPModel` (the preset's vision tower plus a small text tower) trained with its
  contrastive loss on image-caption pairs (a COCO captions file) and on region-text pairs (a COCO instances
  file: each object's mask and "a small red circle"), so the patch features the LLM reads learn what is where;
- `llm`: a `LlamaForCausalLM` trained on the text of the data (captions, questions and answers, expressions).

Each writes a folder that `visionllm-hf build --vision DIR --llm DIR` assembles, as it does real CLIP and Vicuna
folders; `--model DIR` continues from such a folder (yours or a real one) instead of a preset's random weights.
"""

import contextlib
import io
import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    AddedToken,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    DataCollatorForLanguageModeling,
    LlamaForCausalLM,
    Trainer,
    TrainingArguments,
    set_seed,
)

from ..builder.presets import demo_text_config, demo_vision_config, tiny_text_config, tiny_vision_config
from ..builder.tokenizer import train_tiny_tokenizer
from ..processing.image_processing_visionllm import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

VISION_PRESETS = {"tiny": tiny_vision_config, "demo": demo_vision_config}
TEXT_PRESETS = {"tiny": tiny_text_config, "demo": demo_text_config}
CAPTION_END = "<|endoftext|>"  # CLIP pools its text tower at this token (transformers' CLIP: eos_token_id)
MAX_TEXT_TOKENS = 128


def caption_pairs(captions: str | Path, images: str | Path) -> list[tuple[Path, str]]:
    """(image path, caption) for every caption of a COCO captions file."""
    data = json.loads(Path(captions).read_text())
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise ValueError(f"{captions} is not a COCO captions file (a JSON object with 'images' and 'annotations')")
    files = {image["id"]: Path(images) / image["file_name"] for image in data["images"]}
    pairs = []
    for annotation in data["annotations"]:
        if annotation.get("image_id") not in files or not isinstance(annotation.get("caption"), str):
            raise ValueError(f"{captions}: caption {annotation.get('id')} needs an image_id of 'images' and a caption")
        pairs.append((files[annotation["image_id"]], annotation["caption"]))
    missing = sorted({str(path) for path, _ in pairs if not path.is_file()})
    if missing:
        raise ValueError(f"{len(missing)} images of {captions} are not in {images}, e.g. {missing[0]}")
    return pairs


def read_texts(path: str | Path) -> list[str]:
    """
    The text of a data file: `.txt` (one text per line), a COCO captions JSON, a LLaVA conversation JSON (turns
    written `USER: ... ASSISTANT: ...`, `<image>` and `<video>` removed) or referring JSON lines (expressions, region captions).
    """
    path = Path(path)
    if path.suffix == ".txt":
        return [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [record[field] for record in records for field in ("expression", "region_caption") if record.get(field)]
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "annotations" in data:
        return [annotation["caption"] for annotation in data["annotations"] if annotation.get("caption")]
    if isinstance(data, list):
        return [_conversation_text(record["conversations"]) for record in data if record.get("conversations")]
    raise ValueError(f"{path}: expected .txt lines, COCO captions, a conversation list or referring JSON lines")


def _conversation_text(turns: list[dict]) -> str:
    speakers = {"human": "USER:", "gpt": "ASSISTANT:"}
    return " ".join(f"{speakers.get(turn['from'], turn['from'])} {_without_placeholders(turn['value'])}"
                    for turn in turns)


def _without_placeholders(text: str) -> str:
    return text.replace("<image>", "").replace("<video>", "").strip()


def region_text(annotation: dict, category: str, image: dict | None = None) -> str:
    """
    "a small red circle" from a COCO annotation's `attributes` (as the synthetic data writes), else "a circle";
    with the `image` record (its width and height), also where the object is: "a small red circle at the top
    left" (thirds of the image, from the box's centre).
    """
    attributes = annotation.get("attributes") or {}
    words = [attributes[key] for key in ("size", "colour", "color") if isinstance(attributes.get(key), str)]
    text = "a " + " ".join(words + [category])
    if image is None:
        return text
    x, y, width, height = annotation["bbox"]
    column = ("left", "centre", "right")[min(int(3 * (x + width / 2) / image["width"]), 2)]
    row = ("top", "middle", "bottom")[min(int(3 * (y + height / 2) / image["height"]), 2)]
    return f"{text} at the {row} {column}"


def clip_records(images, captions=None, instances=None, positions: bool = False) -> list[dict]:
    """
    One record per image: its file, its captions (a COCO captions file) and its regions (a COCO instances file:
    each annotation's mask and `region_text`, with where it is when `positions`). At least one of the two files.
    """
    if captions is None and instances is None:
        raise ValueError("CLIP pretraining needs a COCO captions file, a COCO instances file, or both")
    records: dict[Path, dict] = {}
    for path, caption in caption_pairs(captions, images) if captions else []:
        records.setdefault(path, {"path": path, "captions": [], "regions": []})["captions"].append(caption)
    if instances:
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its loading progress
            coco = COCO(str(instances))
        names = {category["id"]: category["name"] for category in coco.loadCats(coco.getCatIds())}
        for image in coco.loadImgs(coco.getImgIds()):
            path = Path(images) / image["file_name"]
            if not path.is_file():
                raise ValueError(f"image {image['file_name']} of {instances} is not in {images}")
            record = records.setdefault(path, {"path": path, "captions": [], "regions": []})
            for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"], iscrowd=False)):
                mask = coco.annToMask(annotation)
                if mask.any():
                    text = region_text(annotation, names[annotation["category_id"]], image if positions else None)
                    record["regions"].append((mask, text))
    return list(records.values())


class ImageTexts(torch.utils.data.Dataset):
    """Each image with one of its captions (or none) and its regions as patch-grid weights with their texts."""

    def __init__(self, records, image_processor, grid: int):
        self.records, self.image_processor, self.grid = records, image_processor, grid

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        with Image.open(record["path"]) as image:
            pixels = self.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        caption = random.choice(record["captions"]) if record["captions"] else None
        masks = [torch.as_tensor(mask, dtype=torch.float32)[None, None] for mask, _ in record["regions"]]
        weights = [F.adaptive_avg_pool2d(mask, self.grid).flatten() for mask in masks]  # the mask's share per patch
        return {"pixel_values": pixels, "caption": caption, "region_weights": weights,
                "region_texts": [text for _, text in record["regions"]]}


def _collate_image_texts(tokenizer):
    def tokens(texts: list[str]) -> dict:
        return tokenizer([text + CAPTION_END for text in texts], padding=True, truncation=True,
                         max_length=MAX_TEXT_TOKENS, return_tensors="pt")

    def collate(items):
        captioned = [index for index, item in enumerate(items) if item["caption"] is not None]
        region_image = [index for index, item in enumerate(items) for _ in item["region_weights"]]
        texts = [text for item in items for text in item["region_texts"]]
        unique = sorted(set(texts))  # regions with the same text are one class, not each other's negatives
        return {
            "pixel_values": torch.stack([item["pixel_values"] for item in items]),
            "captioned": torch.tensor(captioned, dtype=torch.long),
            "captions": tokens([items[index]["caption"] for index in captioned]) if captioned else None,
            "region_image": torch.tensor(region_image, dtype=torch.long),
            "region_weights": torch.stack([w for item in items for w in item["region_weights"]]) if texts else None,
            "region_texts": tokens(unique) if texts else None,
            "region_labels": torch.tensor([unique.index(text) for text in texts], dtype=torch.long),
        }

    return collate


def contrastive_losses(clip: CLIPModel, batch: dict, feature_layer: int) -> dict[str, torch.Tensor]:
    """
    CLIP's image-caption loss, and the same loss between regions (the tower's `feature_layer` patches averaged
    over each region's mask, through CLIP's post-norm and projection) and their texts: the region term trains
    the patch features a VisionLLM reads at `vision_feature_layer`, which the image-level loss leaves untrained.
    """
    vision = clip.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True)
    scale = clip.logit_scale.exp()
    losses = {}
    if batch["captions"] is not None:
        images = F.normalize(clip.visual_projection(vision.pooler_output[batch["captioned"]]), dim=-1)
        texts = F.normalize(clip.text_projection(clip.text_model(**batch["captions"]).pooler_output), dim=-1)
        logits = scale * images @ texts.T
        targets = torch.arange(len(logits), device=logits.device)
        losses["image_caption"] = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    if batch["region_texts"] is not None:
        patches = vision.hidden_states[feature_layer][:, 1:][batch["region_image"]]
        regions = region_embeddings(clip, patches, batch["region_weights"])
        texts = F.normalize(clip.text_projection(clip.text_model(**batch["region_texts"]).pooler_output), dim=-1)
        losses["region_text"] = F.cross_entropy(scale * regions @ texts.T, batch["region_labels"])
    return losses


def region_embeddings(clip: CLIPModel, patches: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """
    Unit-norm CLIP embeddings of regions: `patches` `(regions, grid * grid, width)` averaged with `weights`
    `(regions, grid * grid)` (each patch's share of the region's mask), then CLIP's post-norm and projection.
    """
    pooled = (weights[..., None] * patches).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-6)
    return F.normalize(clip.visual_projection(clip.vision_model.post_layernorm(pooled)), dim=-1)


class CLIPPretrainer(Trainer):
    """transformers' Trainer with the sum of `contrastive_losses` as the loss."""

    def __init__(self, *args, feature_layer: int = -2, **kwargs):
        super().__init__(*args, **kwargs)
        self.feature_layer = feature_layer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = sum(contrastive_losses(model, inputs, self.feature_layer).values())
        return (loss, None) if return_outputs else loss


def new_clip(preset: str, tokenizer) -> CLIPModel:
    """The preset's vision tower with a two-layer text tower (hidden 64) that pools at `CAPTION_END`."""
    vision = VISION_PRESETS[preset]()
    text = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=MAX_TEXT_TOKENS, eos_token_id=tokenizer.convert_tokens_to_ids(CAPTION_END),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=64))


def pretrain_clip(images, out, captions=None, instances=None, preset: str = "demo", model: str | None = None,
                  feature_layer: int = -2, region_positions: bool = False, **training) -> Path:
    """
    Contrastive training (`contrastive_losses`) of a preset's random CLIP, or of the CLIP folder `model`, on the
    images of `captions` and / or `instances` (COCO files). `feature_layer` is the VisionLLM's
    `vision_feature_layer` (-2, LLaVA's and the demo's). `region_positions` adds where each region is to its
    text, so that patch features say where they are (what video tokens averaged over space need to show motion).
    """
    records = clip_records(images, captions, instances, positions=region_positions)
    set_seed(training.get("seed", 0))
    if model is None:
        tokenizer = train_tiny_tokenizer()
        tokenizer.add_tokens([AddedToken(CAPTION_END, special=True, normalized=False)], special_tokens=True)
        clip = new_clip(preset, tokenizer)
        size = clip.config.vision_config.image_size
        image_processor = CLIPImageProcessor(
            size={"height": size, "width": size}, do_center_crop=False, image_mean=list(OPENAI_CLIP_MEAN),
            image_std=list(OPENAI_CLIP_STD),
        )
    else:
        clip, tokenizer = AutoModel.from_pretrained(model), AutoTokenizer.from_pretrained(model)
        image_processor = CLIPImageProcessor.from_pretrained(model)
    tokenizer.padding_side = "right"  # CLIP's text tower pools at CAPTION_END, the first one from the left
    vision = clip.config.vision_config
    dataset = ImageTexts(records, image_processor, grid=vision.image_size // vision.patch_size)
    _train(clip, dataset, _collate_image_texts(tokenizer), out, trainer_class=CLIPPretrainer,
           trainer_kwargs={"feature_layer": feature_layer}, **training)
    for part in (clip, tokenizer, image_processor):
        part.save_pretrained(out)
    return Path(out)


class Texts(torch.utils.data.Dataset):
    def __init__(self, texts, tokenizer):
        self.texts, self.tokenizer = texts, tokenizer

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, index):
        ids = self.tokenizer(self.texts[index], truncation=True, max_length=MAX_TEXT_TOKENS - 1)["input_ids"]
        return {"input_ids": ids + [self.tokenizer.eos_token_id]}


def pretrain_llm(texts: list[str | Path], out, preset: str = "demo", model: str | None = None, **training) -> Path:
    """Next-token training on the text of `texts` (see `read_texts`), of a preset's random Llama or `model`."""
    lines = [line for path in texts for line in read_texts(path)]
    if not lines:
        raise ValueError(f"no text in {', '.join(map(str, texts))}")
    set_seed(training.get("seed", 0))
    if model is None:
        tokenizer = train_tiny_tokenizer()
        llm = LlamaForCausalLM(TEXT_PRESETS[preset](len(tokenizer)))
    else:
        llm, tokenizer = AutoModelForCausalLM.from_pretrained(model), AutoTokenizer.from_pretrained(model)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "right"  # positions count from the first token
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    _train(llm, Texts(lines, tokenizer), collate, out, **training)
    tokenizer.padding_side = padding_side
    llm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Path(out)


def _train(model, dataset, collate, out, trainer_class=Trainer, trainer_kwargs=None, steps: int = 1000, batch_size: int = 32, learning_rate: float = 1e-3,
           seed: int = 0, logging_steps: int = 100):
    """transformers' Trainer: AdamW, cosine schedule with 3% warm-up, on CPU unless a GPU is there."""
    args = TrainingArguments(
        output_dir=str(Path(out) / "trainer"), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.01,
        logging_steps=logging_steps, save_strategy="no", report_to="none", seed=seed, disable_tqdm=True,
        remove_unused_columns=False, dataloader_drop_last=True, dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, data_collator=collate, **(trainer_kwargs or {}))
    trainer.train()


__all__ = [
    "caption_pairs",
    "clip_records",
    "contrastive_losses",
    "new_clip",
    "pretrain_clip",
    "pretrain_llm",
    "read_texts",
    "region_embeddings",
    "region_text",
]
