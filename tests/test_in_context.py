"""Multi-image (in-context) prompts: the decoders read the image the answer is about, not always the first."""

import numpy as np
import pytest
import torch
from PIL import Image

from visionllm_hf.modeling.decoders import visual_prompts_by_row
from visionllm_hf.modeling.image_layout import expand_image_inputs


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (24 + 8 * index, 32, 3), dtype=np.uint8) for index in range(count)]


def test_the_decoders_read_the_last_image_by_default_or_the_one_asked(tiny):
    _, processor = tiny
    first, second = images(3), images(2, seed=1)
    alone = {id(image): processor(images=[image], task="detection", categories=["x"])["decoder_pixel_values"][0]
             for image in first + second}
    batch = processor(images=[first, second], task="detection", categories=["x"])
    assert batch["decoder_image_index"].tolist() == [2, 4]  # each sample's last image, in the batch's image list
    assert torch.equal(batch["decoder_pixel_values"][0], alone[id(first[2])])
    assert torch.equal(batch["decoder_pixel_values"][1], alone[id(second[1])])
    chosen = processor(images=[first, second], task="detection", categories=["x"], decoder_image=[0, -2])
    assert chosen["decoder_image_index"].tolist() == [0, 3]
    assert torch.equal(chosen["decoder_pixel_values"][0], alone[id(first[0])])
    assert torch.equal(chosen["decoder_pixel_values"][1], alone[id(second[0])])


@pytest.mark.parametrize(
    "decoder_image, error, message",
    [(3, ValueError, "decoder_image 3 is out of range for sample 0, which has 3 images"),
     ([0], ValueError, "once per sample \\(2 samples\\), got 1"),
     (True, TypeError, "an image index"), ("last", TypeError, "an image index")],
)
def test_a_bad_decoder_image_is_named(tiny, decoder_image, error, message):
    _, processor = tiny
    with pytest.raises(error, match=message):
        processor(images=[images(3), images(3)], task="detection", categories=["x"], decoder_image=decoder_image)


def test_a_video_samples_decoders_read_its_first_frame(tiny):
    _, processor = tiny
    video = np.random.default_rng(3).integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "segment the circle"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], videos=[video])
    first_frame = processor(images=[video[0]], task="detection", categories=["x"])["decoder_pixel_values"]
    assert inputs["decoder_image_index"].tolist() == [-1]
    assert torch.equal(inputs["decoder_pixel_values"], first_frame)


def test_only_the_regions_on_the_decoders_image_prompt_the_mask_decoder(tiny):
    _, processor = tiny
    example, query = images(2)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                      {"type": "text", "text": "<region> is marked; segment <region>"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=[[example, query]], text=[text], regions=[[[{"box": [2, 2, 12, 12]}], [{"box": [0, 0, 20, 16]}]]])
    region_id = processor.tokenizer.convert_tokens_to_ids("<region>")
    every = visual_prompts_by_row(inputs["input_ids"], region_id, inputs["region_masks"])
    on_query = visual_prompts_by_row(inputs["input_ids"], region_id, inputs["region_masks"],
                                     inputs["region_image_index"], inputs["decoder_image_index"])
    assert len(every[0]) == 2 and len(on_query[0]) == 1
    assert torch.equal(on_query[0][0], inputs["region_masks"][1])  # the query image's region, not the example's


def test_beam_expansion_points_each_copy_at_its_own_decoder_image(tiny):
    model, processor = tiny
    batch = processor(images=[images(3), images(2, seed=1)], task="detection", categories=["x"], decoder_image=[1, 0])
    inputs = {key: batch[key] for key in ("pixel_values", "image_grids", "decoder_image_index")}
    expanded = expand_image_inputs(
        inputs, batch["input_ids"], 2, image_token_id=model.config.image_token_id,
        region_token_id=model.config.region_token_id, image_seq_length=model.config.image_seq_length,
        use_global_view=model.config.use_global_view, video_token_id=model.config.video_token_id,
    )
    # images per copy: 3, 3, 2, 2 -> each copy's decoder image is its own second (then first) image
    assert expanded["decoder_image_index"].tolist() == [1, 4, 6, 8]
    tiles = model.config.use_global_view + 1  # these small images take one local tile and the global view
    grids = expanded["image_grids"]
    assert len(grids) == 10 and len(expanded["pixel_values"]) == 10 * tiles


def test_shipped_demo_model_detects_on_the_query_image_of_a_three_image_prompt():
    """
    Blank example images first, the scene last: each `[DET]`'s best box is where the single-image run puts it
    (the LLM's states change a little with the extra images, the decoder's image does not); pointed at a blank
    example instead, the decoder finds none of them.
    """
    from torchvision.ops import box_iou
    from transformers import AutoModel, AutoProcessor

    from visionllm_hf.demo import DEMO_MODEL
    from visionllm_hf.synthetic import make_scene

    model = AutoModel.from_pretrained(DEMO_MODEL, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(DEMO_MODEL, trust_remote_code=True)
    blank = Image.new("RGB", (128, 128), (200, 200, 200))
    scenes = [scene for scene in (make_scene(1, index) for index in range(12)) if len({s.kind for s in scene.shapes}) == 1]

    def best_boxes(sample_images, kinds, **options):
        inputs = processor(images=[sample_images], task="detection", categories=kinds, **options)
        results = model.generate(**inputs, max_new_tokens=20).results[0]
        return [result["boxes"][result["scores"].argmax()] if len(result["scores"]) else None for result in results]

    def overlap(a, b) -> float:
        return 0.0 if a is None or b is None else box_iou(a[None], b[None]).item()

    for scene in scenes[:3]:
        kinds = [scene.shapes[0].kind]
        single = best_boxes([scene.image], kinds)
        query_last = best_boxes([blank, blank, scene.image], kinds)
        on_blank = best_boxes([blank, blank, scene.image], kinds, decoder_image=0)
        assert all(overlap(a, b) >= 0.9 for a, b in zip(single, query_last)), (single, query_last)
        assert all(overlap(a, b) < 0.5 for a, b in zip(single, on_blank)), (single, on_blank)


@pytest.mark.parametrize("task", ["in_context_detection", "in_context_segmentation"])
def test_in_context_training_samples_mark_the_kind_in_other_images_and_find_all_in_the_last(task, tmp_path):
    import json
    import random

    from visionllm_hf.synthetic import write_dataset
    from visionllm_hf.trainer.data import CocoSource

    paths = write_dataset(tmp_path, 12, seed=0)
    source = CocoSource(str(paths["instances"]), str(paths["images"]), task=task)
    coco = json.loads(paths["instances"].read_text())
    names = {category["id"]: category["name"] for category in coco["categories"]}
    by_file = {image["file_name"]: image["id"] for image in coco["images"]}
    for index in range(len(source)):
        sample = source.sample(index, random.Random(index))
        *examples, query = [by_file[path.rsplit("/", 1)[1]] for path in sample["images"]]
        kind = sample["messages"][1]["content"].removesuffix(" [DET].")
        assert query == source.image_ids[index] and query not in examples and 1 <= len(examples) <= 2
        assert sample["messages"][0]["content"].count("<region>") == len(examples)
        assert [len(regions) for regions in sample["regions"]] == [1] * len(examples) + [0]
        for example, (region,) in zip(examples, sample["regions"]):
            shapes = [a for a in coco["annotations"] if a["image_id"] == example and names[a["category_id"]] == kind]
            if task == "in_context_detection":  # the marked box is one of that kind's boxes there
                x1, y1, x2, y2 = region["box"]
                assert [x1, y1, x2 - x1, y2 - y1] in [a["bbox"] for a in shapes]
            else:
                assert region["mask"].sum() in [a["area"] for a in shapes]
        wanted = [a for a in coco["annotations"] if a["image_id"] == query and names[a["category_id"]] == kind]
        (target,) = sample["targets"]
        assert target["category"] == kind and len(target["boxes"]) == len(wanted)
        assert ("masks" in target) == (task == "in_context_segmentation")
