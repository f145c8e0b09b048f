"""`visionllm-hf demo`: build a checkpoint, reload it the way a hub user would, and ask it about images.

Until the trained demo model ships, the checkpoint is the random `tiny` preset: the answers are noise, but every
step a user takes (save, `trust_remote_code` load, chat template, batched generation, decoding) is real.
"""

import json
from pathlib import Path

from PIL import Image, ImageDraw
from transformers import AutoModel, AutoProcessor

from .builder import build_tiny, count_parameters, save_checkpoint


def demo_images() -> dict[str, Image.Image]:
    """Three drawn scenes of different aspect ratios (square, wide, tall)."""
    scenes = {}
    for name, size in {"square": (96, 96), "wide": (192, 48), "tall": (48, 192)}.items():
        image = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(image)
        width, height = size
        draw.ellipse([width * 0.1, height * 0.1, width * 0.45, height * 0.45], fill="red")
        draw.rectangle([width * 0.55, height * 0.55, width * 0.9, height * 0.9], fill="blue")
        scenes[name] = image
    return scenes


def run_demo(out: Path, question: str = "What shapes are in the image?") -> list[dict]:
    checkpoint = out / "checkpoint"
    model, processor = build_tiny()
    save_checkpoint(model, processor, checkpoint)
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)

    images = demo_images()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=list(images.values()), text=[prompt] * len(images), return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=12, do_sample=False, return_dict_in_generate=False)
    answers = processor.post_process_image_text_to_text(generated[:, inputs["input_ids"].shape[1] :])

    results = []
    for (name, image), grid, answer in zip(images.items(), inputs["image_grids"].tolist(), answers):
        tiles = processor.image_processor.num_tiles(grid)
        results.append({"image": name, "size": list(image.size), "grid": grid, "tiles": tiles, "answer": answer})
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))

    print(f"checkpoint: {checkpoint} ({count_parameters(model)['total']:,d} parameters, random weights)")
    print(f"{'image':<8}{'size':<10}{'grid':<8}{'tiles':<7}answer")
    for row in results:
        size, grid = "x".join(map(str, row["size"])), "x".join(map(str, row["grid"]))
        print(f"{row['image']:<8}{size:<10}{grid:<8}{row['tiles']:<7}{row['answer']!r}")
    print(f"results written to {out / 'results.json'}")
    return results


__all__ = ["demo_images", "run_demo"]
