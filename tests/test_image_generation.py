"""[GEN] text-to-image and [EDIT] editing through the super link, on tiny diffusers components."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from visionllm_hf.builder import build_tiny, save_checkpoint

from .helpers import ScriptedTokens, random_image
from .test_hub_packaging import load_in_fresh_environment

PROMPT = "USER: draw a red disc ASSISTANT:"
ANSWER = " a red disc [GEN]"
EDIT_PROMPT = "USER: <image>\nmake the disc green ASSISTANT:"
EDIT_ANSWER = " done [EDIT]"
FEW_STEPS = {"num_inference_steps": 10, "guidance_scale": 3.0, "seed": 0}


def disc_image(colour, background=(0.1, 0.1, 0.6), centre=(14, 18)) -> torch.Tensor:
    """(3, 32, 32) in [0, 1]: a disc of radius 8 and `colour` on a plain `background`."""
    rows, columns = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disc = ((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < 64).float()
    return disc * torch.tensor(colour).view(3, 1, 1) + (1 - disc) * torch.tensor(background).view(3, 1, 1)


RED_DISC, GREEN_DISC = disc_image([0.9, 0.1, 0.1]), disc_image([0.1, 0.9, 0.1])
OTHER_DISCS = [  # what else the stand-in for a pretrained VAE has seen
    disc_image([1, 1, 1], [0, 0, 0], (20, 10)),
    disc_image([0, 0, 0], [1, 1, 1], (10, 22)),
    disc_image([0.9, 0.9, 0.1], [0.8, 0.1, 0.1], (22, 20)),
    disc_image([0.1, 0.1, 0.9], [0.9, 0.9, 0.2], (10, 10)),
]


def as_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def autoencoder_weights():
    """
    A VAE state trained to reconstruct six disc images (the test images among them): stands for Stable
    Diffusion's pretrained VAE, which the decoders keep frozen (a random VAE could not draw any target).
    """
    model, _ = build_tiny(seed=0, generation=True)
    vae = model.decoders["gen"].vae.requires_grad_(True)
    images = torch.stack([RED_DISC, GREEN_DISC, *OTHER_DISCS]) * 2 - 1
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    for _ in range(400):
        loss = F.mse_loss(vae(images, sample_posterior=True).sample, images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # Stable Diffusion's rule: scale latents to unit standard deviation
        scaling_factor = 1 / float(vae.encode(images).latent_dist.mode().std())
    return {name: value.detach().clone() for name, value in vae.state_dict().items()}, scaling_factor


def generation_model(autoencoder_weights, seed: int = 0):
    weights, scaling_factor = autoencoder_weights
    model, processor = build_tiny(seed=seed, generation=True)
    for name, field in (("gen", "generation_decoder_config"), ("edit", "editing_decoder_config")):
        getattr(model.config, field)["vae"]["scaling_factor"] = scaling_factor  # saved with the checkpoint
        model.decoders[name].vae.register_to_config(scaling_factor=scaling_factor)
        model.decoders[name].vae.load_state_dict(weights)
    return model, processor


def forced_generate(model, processor, prompts, answers, images=None, **options):
    scripts = [processor.tokenizer.encode(answer, add_special_tokens=False) for answer in answers]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    forced = ScriptedTokens(scripts, processor.tokenizer.eos_token_id)
    return model.generate(**inputs, max_new_tokens=24, logits_processor=[forced], **{**FEW_STEPS, **options})


def made_image(model, processor, task: str) -> torch.Tensor:
    if task == "gen":
        output = forced_generate(model, processor, [PROMPT], [ANSWER])
    else:
        output = forced_generate(model, processor, [EDIT_PROMPT], [EDIT_ANSWER], images=[as_pil(RED_DISC)])
    return as_tensor(output.results[0][-1]["images"][0])


@pytest.mark.parametrize("task", ["gen", "edit"])
def test_training_on_one_pair_lowers_the_image_error_five_fold(autoencoder_weights, task):
    model, processor = generation_model(autoencoder_weights)
    model.decoders[task].condition_dropout = 0.0  # one pair: nothing to learn from the unconditional branch
    before = F.mse_loss(made_image(model.eval(), processor, task), GREEN_DISC if task == "edit" else RED_DISC)

    copies = 8  # one pair, several noise levels per step
    if task == "gen":
        inputs = processor(text=[PROMPT + ANSWER] * copies, return_tensors="pt")
        target = RED_DISC
    else:
        inputs = processor(images=[as_pil(RED_DISC)] * copies, text=[EDIT_PROMPT + EDIT_ANSWER] * copies, return_tensors="pt")
        target = GREEN_DISC
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    model.train()
    for _ in range(80):
        output = model(**inputs, super_link_targets=[[{"image": target}]] * copies)
        optimizer.zero_grad()
        output.decoder_losses[f"{task}_noise_mse"].backward()
        optimizer.step()
    after = F.mse_loss(made_image(model.eval(), processor, task), target)
    assert after * 5 <= before, (float(before), float(after))


def test_same_seed_same_image_and_a_batch_equals_one_at_a_time(autoencoder_weights):
    model, processor = generation_model(autoencoder_weights)
    model.eval()
    image = random_image(40, 56, seed=3)
    prompts = [PROMPT, "USER: <image>\nfind the cats, then draw one ASSISTANT:", EDIT_PROMPT, "USER: hello ASSISTANT:"]
    answers = [ANSWER, " cat [DET], a cat [GEN] and another [GEN]", EDIT_ANSWER, " hello there"]
    images = [[], [image], [as_pil(RED_DISC)], []]
    batched = forced_generate(model, processor, prompts, answers, images=images)
    assert [[r["routing"] for r in row] for row in batched.results] == [["gen"], ["det", "gen", "gen"], ["edit"], []]
    for row in range(len(prompts)):
        alone = forced_generate(model, processor, [prompts[row]], [answers[row]], images=[images[row]] if images[row] else None)
        for ours, theirs in zip(batched.results[row], alone.results[0]):
            if "images" in ours:
                difference = np.abs(np.asarray(ours["images"][0], int) - np.asarray(theirs["images"][0], int))
                assert difference.max() <= 1  # uint8 rounding of equal floats
            else:
                torch.testing.assert_close(ours["boxes"], theirs["boxes"], atol=1e-4, rtol=0)
    first, second = (np.asarray(result["images"][0]) for result in batched.results[1][1:])
    assert not np.array_equal(first, second)  # the second [GEN] of a sample draws its own noise (seed + 1)

    once, again, other_seed = (
        np.asarray(forced_generate(model, processor, [PROMPT], [ANSWER], seed=seed).results[0][0]["images"][0])
        for seed in (0, 0, 1)
    )
    assert np.array_equal(once, again)
    assert np.abs(once.astype(int) - other_seed.astype(int)).max() > 10

    processed = processor.post_process_generation(batched)
    assert [[(i["routing"], i["label"]) for i in p["images"]] for p in processed] == [
        [("[GEN]", "a red disc")], [("[GEN]", "a cat"), ("[GEN]", "and another")], [("[EDIT]", "done")], []
    ]
    assert isinstance(processed[2]["images"][0]["image"], Image.Image)
    assert [o["routing"] for o in processed[1]["objects"]] and processed[0]["objects"] == []


def test_diffusion_losses_reach_the_queries_the_mapper_and_the_llm(autoencoder_weights):
    model, processor = generation_model(autoencoder_weights)
    inputs = processor(
        images=[[], [as_pil(RED_DISC)]], text=[PROMPT + ANSWER, EDIT_PROMPT + EDIT_ANSWER], return_tensors="pt", padding=True
    )
    text_features = torch.randn(77, 32)  # stands for SD's text-encoder features of the caption
    targets = [[{"image": RED_DISC, "text_embeds": text_features}], [{"image": GREEN_DISC}]]
    output = model(**inputs, super_link_targets=targets)
    assert set(output.decoder_losses) == {"gen_noise_mse", "gen_text_mse", "edit_noise_mse"}
    output.loss.backward()
    grads = {
        "gen queries": model.model.super_link.queries["gen"].grad,
        "edit queries": model.model.super_link.queries["edit"].grad,
        "gen mapper": model.decoders["gen"].mapper.queries.grad,
        "edit mapper": model.decoders["edit"].mapper.qformer.encoder.layer[0].crossattention.attention.query.weight.grad,
        "gen unet": model.decoders["gen"].unet.conv_in.weight.grad,
        "llm": model.model.language_model.layers[0].self_attn.q_proj.weight.grad,
    }
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.decoders["gen"].vae.parameters())  # frozen

    alone = model(**inputs, super_link_targets=[[{"image": RED_DISC}], [{"image": GREEN_DISC}]])
    assert "gen_text_mse" not in alone.decoder_losses  # reported only when a target has text features


def test_bad_targets_and_configs_are_named(autoencoder_weights):
    model, processor = generation_model(autoencoder_weights)
    inputs = processor(text=[PROMPT + ANSWER], return_tensors="pt")
    with pytest.raises(ValueError, match="needs 'image'"):
        model(**inputs, super_link_targets=[[{"box": [0, 0, 1, 1]}]])
    with pytest.raises(ValueError, match=r"must be \(3, h, w\)"):
        model(**inputs, super_link_targets=[[{"image": torch.rand(32, 32)}]])
    with pytest.raises(TypeError, match="unknown image generation options"):
        model.decoders["gen"].results({"prompt_embeds": torch.zeros(1, 77, 32), "rows": torch.zeros(1)}, steps=3)
    config = model.config.to_dict()
    config["editing_decoder_config"]["unet"]["in_channels"] = 4
    with pytest.raises(ValueError, match="needs 8 input channels"):
        type(model)(type(model.config).from_dict(config))


def test_generation_checkpoint_round_trips_without_the_package(autoencoder_weights, tmp_path):
    model, processor = generation_model(autoencoder_weights)
    model.eval()
    folder = tmp_path / "checkpoint"
    save_checkpoint(model, processor, folder)
    images = [random_image(40, 40, seed=4), as_pil(RED_DISC)]
    texts = ["<image> draw it", "<image> make the disc green"]
    scripts = [processor.tokenizer.encode(a, add_special_tokens=False) for a in (ANSWER, EDIT_ANSWER)]
    loaded = load_in_fresh_environment(
        folder, {"images": images, "text": texts, "scripts": scripts, "generate_kwargs": FEW_STEPS}, tmp_path
    )
    inputs = processor(images=images, text=texts, return_tensors="pt")
    ours = model.generate(
        **inputs, max_new_tokens=20, logits_processor=[ScriptedTokens(scripts, processor.tokenizer.eos_token_id)], **FEW_STEPS
    )
    assert [[r["routing"] for r in row] for row in loaded["results"]] == [["gen"], ["edit"]]
    for theirs, mine in zip(loaded["results"], ours.results):
        difference = np.abs(np.asarray(theirs[0]["images"][0], int) - np.asarray(mine[0]["images"][0], int))
        assert difference.max() <= 1


def test_a_checkpoint_without_generation_decoders_loads_without_diffusers(tiny, tiny_checkpoint, tmp_path):
    model, processor = tiny
    images = [random_image(30, 30, seed=5)]
    loaded = load_in_fresh_environment(tiny_checkpoint, {"images": images, "text": ["<image> hi"]}, tmp_path, block="diffusers")
    with torch.no_grad():
        expected = model(**processor(images=images, text=["<image> hi"], return_tensors="pt")).logits
    assert (loaded["logits"] - expected).abs().max() <= 1e-5


def save_tiny_pipeline(folder, editing: bool):
    """A diffusers pipeline folder (unet/, vae/, scheduler/, text_encoder/, tokenizer/) of tiny random parts."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from visionllm_hf.builder import train_tiny_tokenizer
    from visionllm_hf.builder.presets import tiny_diffusion_config

    parts = tiny_diffusion_config(editing=editing)
    tokenizer = train_tiny_tokenizer()
    tokenizer.model_max_length = 77
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=32,
    ))
    StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(parts["vae"]), text_encoder=text_encoder, tokenizer=tokenizer,
        unet=UNet2DConditionModel.from_config(parts["unet"]), scheduler=DDIMScheduler.from_config(parts["scheduler"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)
    return text_encoder, tokenizer


def test_build_loads_pretrained_diffusion_components(tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoModel

    from visionllm_hf.cli import main

    text_encoder, tokenizer = save_tiny_pipeline(tmp_path / "sd", editing=False)
    save_tiny_pipeline(tmp_path / "ip2p", editing=True)
    out = tmp_path / "built"
    assert main(["build", "--preset", "tiny", "--diffusion", str(tmp_path / "sd"), "--edit", str(tmp_path / "ip2p"), "--out", str(out)]) == 0
    model = AutoModel.from_pretrained(out)
    for name, source in (("gen", "sd"), ("edit", "ip2p")):
        for part, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
            expected = cls.from_pretrained(tmp_path / source, subfolder=part).state_dict()
            for key, value in getattr(model.decoders[name], part).state_dict().items():
                torch.testing.assert_close(value, expected[key], atol=0, rtol=0)
    assert model.decoders["edit"].unet.config.in_channels == 8
    ids = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model.decoders["gen"].null_prompt_embeds, text_encoder(ids).last_hidden_state[0])
    base, _ = build_tiny(seed=0)
    torch.testing.assert_close(model.lm_head.weight, base.lm_head.weight, atol=0, rtol=0)
    assert model.config.routing_decoders["gen"] == "text_to_image"


def test_cli_trains_generation_and_editing_with_the_text_feature_loss(tmp_path):
    import json

    from safetensors.torch import load_file

    from visionllm_hf.cli import main

    save_tiny_pipeline(tmp_path / "sd", editing=False)
    save_tiny_pipeline(tmp_path / "ip2p", editing=True)
    base = tmp_path / "base"
    assert main(["build", "--preset", "tiny", "--diffusion", str(tmp_path / "sd"), "--edit", str(tmp_path / "ip2p"),
                 "--out", str(base)]) == 0
    data = tmp_path / "data"
    data.mkdir()
    for name, image in (("red.png", RED_DISC), ("green.png", GREEN_DISC)):
        as_pil(image).save(data / name)
    (data / "t2i.jsonl").write_text(json.dumps({"prompt": "a red disc", "image": "red.png"}) + "\n")
    edit = {"input_image": "red.png", "instruction": "make the disc green", "image": "green.png"}
    (data / "edit.jsonl").write_text(json.dumps(edit) + "\n")
    output = tmp_path / "run"
    argv = [
        "train", "--model", str(base), "--stage", "v2-decoders-only", "--output_dir", str(output), "--max_steps", "6",
        "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_steps", "6", "--use_cpu",
        "--report_to", "none", "--samples_per_epoch", "6", "--caption_encoder", str(tmp_path / "sd"), "--data",
        f"generation={data / 't2i.jsonl'},task=text_to_image", f"generation={data / 'edit.jsonl'},task=image_editing",
    ]
    assert main(argv) == 0
    history = json.loads((output / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    logged = set().union(*history)
    assert {"gen_noise_mse", "gen_text_mse", "edit_noise_mse", "edit_text_mse"} <= logged, logged
    before, after = load_file(base / "model.safetensors"), load_file(output / "model.safetensors")
    vae_keys = [key for key in before if ".vae." in key]
    unet_keys = [key for key in before if key.startswith("decoders.gen.unet.")]
    assert vae_keys and all(torch.equal(before[key], after[key]) for key in vae_keys)  # frozen
    assert any(not torch.equal(before[key], after[key]) for key in unet_keys)
