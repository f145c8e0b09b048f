"""The super link: routing tokens, queries, decoders inside generate, training losses and gradients."""

import numpy as np
import pytest
import torch

from visionllm_hf.modeling.decoders import run_decoders, visual_prompts_by_row
from visionllm_hf.processing import SPECIAL_TOKENS, VisionLLMProcessor
from visionllm_hf.processing.special_tokens import QUERY_TOKEN, ROUTING_TOKENS

from .helpers import ScriptedTokens, random_image

ANSWERS = ["just words here", "the cat [DET], a dog [DET]", "it [SEG] and there <LOC>"]
IMAGES = [(50, 80), (64, 64), (40, 100)]


def encode(processor, text: str) -> list[int]:
    return processor.tokenizer.encode(text, add_special_tokens=False)


def prompts_and_images(count=3):
    images = [random_image(h, w, seed=index) for index, (h, w) in enumerate(IMAGES[:count])]
    texts = ["<image> Describe.", "<image> Find every animal in the picture please.", "<image> Where?"][:count]
    return images, texts


def scripted_generate(model, processor, answers, images, texts, **kwargs):
    inputs = processor(images=images, text=texts)
    scripts = [encode(processor, answer) for answer in answers]
    script = ScriptedTokens(scripts, processor.tokenizer.eos_token_id)
    kwargs.setdefault("max_new_tokens", 20)
    return inputs, model.generate(**inputs, logits_processor=[script], **kwargs)


def test_routing_tokens_are_single_ids_after_save_and_reload(tiny, tmp_path):
    _, processor = tiny
    processor.save_pretrained(tmp_path)
    reloaded = VisionLLMProcessor.from_pretrained(tmp_path)
    for token in [*ROUTING_TOKENS.values(), QUERY_TOKEN]:
        assert len(reloaded.tokenizer.encode(token, add_special_tokens=False)) == 1
        assert reloaded.tokenizer.convert_tokens_to_ids(token) == processor.tokenizer.convert_tokens_to_ids(token)
    assert reloaded.super_link_queries == processor.super_link_queries == {"[DET]": 4, "[SEG]": 4, "[POSE]": 4, "<LOC>": 0}


def test_processor_puts_the_queries_after_each_routing_token(tiny):
    model, processor = tiny
    text = "<image> a [DET], b [DET] and c <LOC>"
    ids = processor(images=[random_image(20, 20)], text=[text])["input_ids"][0].tolist()
    query = model.config.query_token_id
    for name, count in (("det", 4), ("loc", 0)):
        for position in [i for i, token in enumerate(ids) if token == getattr(model.config, f"{name}_token_id")]:
            assert ids[position + 1 : position + 1 + count] == [query] * count
            assert position + 1 + count == len(ids) or ids[position + 1 + count] != query
    assert processor.insert_queries(processor.insert_queries(text)) == processor.insert_queries(text)


def test_query_positions_are_left_out_of_the_lm_loss(tiny):
    model, processor = tiny
    inputs = processor(images=[random_image(32, 32)], text=["<image> a cat [DET] is here"])
    ids = inputs["input_ids"]
    with torch.no_grad():
        output = model(**inputs, labels=ids)
    masked = ids.masked_fill(ids == model.config.query_token_id, -100)
    expected = torch.nn.functional.cross_entropy(output.logits[0, :-1], masked[0, 1:], ignore_index=-100)
    torch.testing.assert_close(output.lm_loss, expected)


def test_generation_states_equal_a_teacher_forced_forward(tiny):
    model, processor = tiny
    images, texts = prompts_and_images()
    inputs, generated = scripted_generate(model, processor, ANSWERS, images, texts)
    assert (inputs["attention_mask"] == 0).any()  # left padding in play
    assert [len(states) for states in generated.super_link_states] == [0, 2, 2]
    with torch.no_grad():
        forced = model(
            input_ids=generated.sequences,
            attention_mask=generated.attention_mask,
            pixel_values=inputs["pixel_values"],
            image_grids=inputs["image_grids"],
        )
    new = [o for o in forced.super_link_occurrences if o.position >= generated.prompt_length]
    for row in range(3):
        teacher = [o for o in new if o.row == row]
        assert [o.name for o in teacher] == [r["routing"] for r in generated.results[row]]
        assert [o.position for o in teacher] == [r["position"] for r in generated.results[row]]
        for states, occurrence in zip(generated.super_link_states[row], teacher):
            assert (states - occurrence.states).abs().max() <= 1e-4


def test_batched_results_equal_per_sample_results(tiny):
    model, processor = tiny
    images, texts = prompts_and_images()
    _, batched = scripted_generate(model, processor, ANSWERS, images, texts)
    batched_text = processor.post_process_generation(batched, target_sizes=IMAGES)
    for row in range(3):
        _, alone = scripted_generate(model, processor, ANSWERS[row : row + 1], images[row : row + 1], texts[row : row + 1])
        alone_text = processor.post_process_generation(alone, target_sizes=IMAGES[row : row + 1])
        assert batched_text[row]["text"] == alone_text[0]["text"]
        assert len(batched.results[row]) == len(alone.results[0])
        for ours, theirs in zip(batched.results[row], alone.results[0]):
            assert ours["routing"] == theirs["routing"]
            for key in ("boxes", "scores", "masks", "keypoints"):
                if key in ours:
                    torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=1e-4)
        labels = [o["label"] for o in batched_text[row]["objects"]]
        assert labels == [o["label"] for o in alone_text[0]["objects"]]


def test_post_processing_labels_and_pixel_coordinates(tiny):
    model, processor = tiny
    images, texts = prompts_and_images()
    _, generated = scripted_generate(model, processor, ANSWERS, images, texts)
    processed = processor.post_process_generation(generated, target_sizes=IMAGES)
    assert processed[0] == {"text": "just words here", "objects": [], "images": []}
    assert {o["label"] for o in processed[1]["objects"]} <= {"the cat", "a dog"}
    assert processed[1]["text"].replace(" ", "") == "thecat,adog"
    segment, location = [o for o in processed[2]["objects"] if o["routing"] == "[SEG]"], [
        o for o in processed[2]["objects"] if o["routing"] == "<LOC>"
    ]
    assert len(segment) == 1 and segment[0]["label"] == "it" and segment[0]["mask"].shape == IMAGES[2]
    assert len(location) == 1 and location[0]["label"] == "and there"
    x1, y1, x2, y2 = location[0]["box"]
    height, width = IMAGES[2]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    for obj in processed[1]["objects"]:
        assert obj["mask"].shape == IMAGES[1] and 0 <= obj["score"] <= 1 and len(obj["box"]) == 4


def test_pose_results_carry_keypoints_in_pixels(tiny):
    model, processor = tiny
    image = random_image(60, 90)
    _, generated = scripted_generate(model, processor, ["a person [POSE]"], [image], ["<image> pose?"])
    objects = processor.post_process_generation(generated, target_sizes=[(60, 90)])[0]["objects"]
    assert objects and all(len(o["keypoints"]) == len(model.config.keypoint_names) for o in objects)
    for x, y, visibility in objects[0]["keypoints"]:
        assert 0 <= x <= 90 and 0 <= y <= 60 and 0 <= visibility <= 1


def test_keypoints_are_predicted_in_their_instance_box_frame(tiny):
    model = tiny[0]
    decoder, size = model.decoders["pose"], model.config.decoder_image_size
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randn(2, model.config.super_link_queries["pose"], decoder.input_width, generator=generator)
    pixels = torch.randn(1, 3, size, size, generator=generator)
    with torch.no_grad():
        predictions = decoder(prompts, decoder.encode_images(pixels), torch.tensor([0, 0]))
    boxes, keypoints = predictions["boxes"][:, :, None], predictions["keypoints"][..., :2]
    # at most one box size from the query's box centre: every keypoint lands on or next to its own instance
    assert ((keypoints - boxes[..., :2]).abs() <= boxes[..., 2:] + 1e-6).all()
    assert keypoints.std(dim=2).sum() > 0  # keypoint names are told apart within an instance


def two_squares(size: int = 64) -> tuple[np.ndarray, list[dict], torch.Tensor]:
    """A dark image with a white square on each side, a point on each, and each square's mask."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    masks = torch.zeros(2, size, size)
    for index, x in enumerate((0, 40)):
        image[16:40, x : x + 24] = 255
        masks[index, 16:40, x : x + 24] = 1
    return image, [{"point": [8.0, 24.0]}, {"point": [56.0, 24.0]}], masks


def test_interactive_segmentation_gives_the_visual_prompt_to_sam_inside_generate(tiny):
    model, processor = tiny
    image, points, _ = two_squares()
    inputs = processor(images=[image, image], text=["<image> segment <region>", "<image> segment this"],
                       regions=[[points[0]], []])
    script = ScriptedTokens([encode(processor, "[SEG]")] * 2, processor.tokenizer.eos_token_id)
    generated = model.generate(**inputs, logits_processor=[script], max_new_tokens=5)
    decoder, link = model.decoders["seg"], model.model.super_link
    states = torch.stack([link.projections["seg"](row[0]) for row in generated.super_link_states])
    features = decoder.encode_images(inputs["decoder_pixel_values"])
    rows = torch.tensor([0, 1])
    with torch.no_grad():
        prompted = decoder(states, features, rows, visual_prompts=[inputs["region_masks"][0], None])["mask_logits"]
        unprompted = decoder(states, features, rows)["mask_logits"]
    masks = [generated.results[row][0]["masks"][0] for row in range(2)]
    torch.testing.assert_close(masks[0], prompted[0].sigmoid())  # the row with a region: SAM read it
    assert not torch.allclose(prompted[0], unprompted[0], atol=0, rtol=1e-2)  # (an untrained SAM: tiny logits)
    torch.testing.assert_close(masks[1], unprompted[1].sigmoid())  # no region: SAM's no-mask prompt


def test_sam_learns_to_segment_what_the_point_marks():
    """With the [SEG] prompt made identical for both rows, only the point can tell SAM which square to segment."""
    from visionllm_hf.builder import build_tiny

    model, processor = build_tiny(seed=2)
    image, points, masks = two_squares()
    inputs = processor(images=[image, image], text=["<image> segment <region> [SEG]"] * 2,
                       regions=[[points[0]], [points[1]]])
    targets = [[{"mask": masks[0]}], [{"mask": masks[1]}]]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    torch.nn.init.zeros_(model.model.super_link.projections["seg"].linear_2.weight)  # the same prompt for both
    sam = model.decoders["seg"].sam
    for parameter in sam.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(sam.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(400):
        loss = model(**inputs, super_link_targets=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        occurrences = model(**inputs).super_link_occurrences
        outputs = run_decoders(model.model.super_link, model.decoders, occurrences, inputs["decoder_pixel_values"],
                               visual_prompts_by_row(inputs["input_ids"], model.config.region_token_id,
                                                     inputs["region_masks"]))
    predicted = outputs["seg"][1]["mask_logits"] > 0
    truth = torch.nn.functional.interpolate(masks[:, None], size=predicted.shape[-2:], mode="nearest")[:, 0] > 0
    iou = (predicted[:, None] & truth[None]).sum((-1, -2)) / (predicted[:, None] | truth[None]).sum((-1, -2))
    assert iou.diagonal().min() > 0.5 and (iou.diagonal() > iou.flip(1).diagonal()).all(), iou


def test_routing_token_as_the_very_last_token_still_runs_its_decoder(tiny):
    model, processor = tiny
    images, texts = prompts_and_images(1)
    length = len(encode(processor, "cat [DET]"))  # the routing token is the last token allowed
    _, generated = scripted_generate(model, processor, ["cat [DET]"], images, texts, max_new_tokens=length)
    assert [r["routing"] for r in generated.results[0]] == ["det"]
    new = generated.sequences[0, generated.prompt_length :].tolist()
    assert new[-4:] == [model.config.query_token_id] * 4  # its queries are in the sequence


def test_routing_token_without_label_text_gets_an_empty_label(tiny):
    model, processor = tiny
    images, texts = prompts_and_images(1)
    _, generated = scripted_generate(model, processor, ["<LOC>"], images, texts)
    objects = processor.post_process_generation(generated, target_sizes=[IMAGES[0]])[0]["objects"]
    assert [o["label"] for o in objects] == [""]


def test_batch_where_no_row_routes(tiny):
    model, processor = tiny
    images, texts = prompts_and_images(2)
    _, generated = scripted_generate(model, processor, ["hello", "plain answer"], images, texts)
    assert generated.results == [[], []] and generated.super_link_states == [[], []]
    processed = processor.post_process_generation(generated)
    assert [p["text"] for p in processed] == ["hello", "plain answer"]


def test_sampled_tokens_never_include_queries_and_sampling_runs(tiny):
    model, processor = tiny
    images, texts = prompts_and_images(2)
    inputs = processor(images=images, text=texts)
    torch.manual_seed(0)
    generated = model.generate(**inputs, max_new_tokens=10, do_sample=True, top_k=20, temperature=0.8)
    query = model.config.query_token_id
    for row in generated.sequences[:, generated.prompt_length :].tolist():
        for index, token in enumerate(row):
            if token == query:  # only directly after a routing token or another query
                assert row[index - 1] == query or model.model.super_link.followers(row[index - 1])


def test_unsupported_generation_modes_are_rejected(tiny):
    model, processor = tiny
    inputs = processor(images=[random_image(20, 20)], text=["<image> hi"])
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(**inputs, num_beams=2)


def test_gradients_reach_queries_projections_llm_and_every_decoder(tiny):
    model, processor = tiny
    images, texts = prompts_and_images()
    answer = "a man [POSE], a cat [DET], it [SEG], there <LOC>"
    inputs = processor(images=images[:1], text=[texts[0] + " " + answer])
    targets = [[
        {"boxes": [[0.2, 0.1, 0.5, 0.9]], "keypoints": torch.rand(1, 17, 3).round()},
        {"boxes": [[0.1, 0.1, 0.4, 0.4]], "masks": torch.ones(1, 64, 64)},
        {"mask": torch.zeros(64, 64).index_fill_(0, torch.arange(10, 40), 1.0)},
        {"box": [0.3, 0.3, 0.6, 0.8]},
    ]]
    model.train()
    model.zero_grad()
    output = model(**inputs, labels=inputs["input_ids"], super_link_targets=targets)
    output.loss.backward()
    model.eval()
    assert set(output.decoder_losses) >= {"det_class", "det_l1", "mask_bce", "mask_dice", "pose_l1", "box_l1", "box_giou"}

    def has_gradient(module) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    super_link = model.model.super_link
    for name in ("det", "seg", "pose"):
        assert super_link.queries[name].grad.abs().sum() > 0, name
    for name, projection in super_link.projections.items():
        assert has_gradient(projection), name
    for name, decoder in model.decoders.items():
        assert has_gradient(decoder), name
    assert has_gradient(model.model.language_model)
    model.zero_grad()


def test_object_decoder_supervises_earlier_layers_and_encoder_proposals(tiny):
    model, processor = tiny
    inputs = processor(images=[random_image(64, 64, seed=2)], text=["<image> ball [DET], cup [DET]"])
    targets = [[{"boxes": [[0.1, 0.2, 0.4, 0.5]]}, {"boxes": [[0.5, 0.5, 0.9, 0.8], [0.6, 0.1, 0.8, 0.3]]}]]
    decoder = model.decoders["det"]
    captured = {}
    hook = decoder.detector.register_forward_hook(lambda module, args, kwargs, output: captured.update(output=output),
                                                  with_kwargs=True)
    predictions = {}
    prediction_hook = decoder.register_forward_hook(lambda module, args, output: predictions.update(output))
    model.train()
    model.zero_grad()
    try:
        output = model(**inputs, super_link_targets=targets)
        output.loss.backward()
    finally:
        hook.remove()
        prediction_hook.remove()
        model.eval()
    detector_output = captured["output"]
    layer_0, proposals = predictions["auxiliary"]  # two decoder layers: the first one, then the encoder proposals
    # the detector refines each layer's boxes into the next layer's reference points, and starts from the proposals
    torch.testing.assert_close(layer_0["boxes"], detector_output.intermediate_reference_points[:, 0])
    torch.testing.assert_close(proposals["boxes"], detector_output.encoder_pred_boxes)
    assert torch.isinf(layer_0["logits"]).sum() == 0 and layer_0["logits"].shape == predictions["logits"].shape
    assert {"det_aux_class", "det_aux_l1", "det_aux_giou"} <= set(output.decoder_losses)
    # the proposal heads that pick the queries' starting boxes learn from the encoder term, and only from it
    detector = decoder.detector.model
    heads = (detector.enc_output, detector.encoder_output_bbox_embed)
    for head in heads:  # (the box MLP starts with a zero last layer, so at first only that layer has gradients)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    weights = model.config.decoder_loss_weights
    saved = dict(weights)
    weights.update(det_aux_class=0.0, det_aux_l1=0.0, det_aux_giou=0.0)
    model.zero_grad()
    model.train()
    try:
        model(**inputs, super_link_targets=targets).loss.backward()
    finally:
        weights.update(saved)
        model.eval()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for head in heads for p in head.parameters())
    model.zero_grad()


def test_category_loss_is_chance_for_identical_features_and_low_for_separated_ones(tiny):
    decoder = tiny[0].decoders["det"]
    targets = [{"boxes": [], "category": name} for name in ("ball", "cup", "ball", "box")]
    identical = torch.ones(4, 8)
    # identical features: every name's prototype is the same, so the softmax over the 3 names is uniform
    torch.testing.assert_close(decoder.category_loss(identical, targets), torch.tensor(3.0).log())
    separated = torch.eye(8)[[0, 1, 0, 2]] + 0.01 * torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    assert decoder.category_loss(separated, targets) < 0.01
    assert decoder.category_loss(identical, targets[:1] * 4) == 0  # one name: nothing to tell apart
    assert decoder.category_loss(identical, [{"boxes": []}] * 4) == 0  # unnamed targets (a user's own data)


def test_category_features_are_standardised_per_dimension(tiny):
    decoder = tiny[0].decoders["det"]
    shared = torch.randn(1, decoder.input_width) * 10
    categories = shared + torch.randn(5, decoder.input_width, generator=torch.Generator().manual_seed(1))
    saved = {name: buffer.clone() for name, buffer in decoder.category_norm.named_buffers()}
    decoder.train()
    try:
        standardised = decoder.standardise_categories(categories)
        torch.testing.assert_close(standardised.mean(dim=0), torch.zeros(decoder.input_width), atol=1e-5, rtol=0)
        torch.testing.assert_close(standardised.var(dim=0, unbiased=False), torch.ones(decoder.input_width),
                                   atol=1e-3, rtol=0)
        assert not torch.equal(decoder.category_norm.running_mean, saved["running_mean"])  # the statistics learn
        single = decoder.standardise_categories(categories[:1])  # one category: the running statistics
        decoder.eval()
        torch.testing.assert_close(single, decoder.standardise_categories(categories[:1]))
    finally:
        decoder.category_norm.load_state_dict(saved)
        decoder.eval()


def test_decoder_targets_must_match_the_routing_tokens(tiny):
    model, processor = tiny
    inputs = processor(images=[random_image(20, 20)], text=["<image> it <LOC>"])
    with pytest.raises(ValueError, match="1 routing tokens but 2 super_link_targets"):
        model(**inputs, super_link_targets=[[{"box": [0, 0, 1, 1]}, {"box": [0, 0, 1, 1]}]])


DECODER_SAMPLES = {
    "loc": ("a ball <LOC>", [{"box": [0.25, 0.3, 0.6, 0.7]}]),
    "seg": ("the ball [SEG]", [{"mask": torch.zeros(64, 64).index_fill_(1, torch.arange(16, 48), 1.0)}]),
    "det": ("ball [DET]", [{"boxes": [[0.1, 0.2, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]], "masks": torch.zeros(2, 64, 64)}]),
    "pose": ("person [POSE]", [{"boxes": [[0.3, 0.1, 0.7, 0.9]], "keypoints": torch.rand(1, 17, 3).round()}]),
}


@pytest.mark.parametrize("name", DECODER_SAMPLES)
def test_each_decoder_learns_one_sample(name):
    from visionllm_hf.builder import build_tiny

    model, processor = build_tiny(seed=1)
    answer, targets = DECODER_SAMPLES[name]
    inputs = processor(images=[random_image(64, 64, seed=3)], text=["<image> " + answer])
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = [*model.decoders[name].parameters(), *model.model.super_link.projections[name].parameters()]
    if name in model.model.super_link.queries:
        trainable.append(model.model.super_link.queries[name])
    for parameter in trainable:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=3e-3, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(100):
        loss = model(**inputs, super_link_targets=[targets]).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if losses[-1] < 0.3 * losses[0]:
            break
    assert losses[-1] < 0.3 * losses[0], (name, losses[0], losses[-1], len(losses))
