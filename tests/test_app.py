"""`visionllm-hf app`: the page answers every task of the shipped demo model, in a real headless browser.

The browser tests start the app on a free localhost port and drive it with Debian's chromium through selenium
(upload, choose a task, draw a box, run, chat), asserting on what the page shows; screenshots go to the test's
tmp folder. Bad uploads must leave a readable message and a page that answers the next request.
"""

import copy
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.app_browser import CHROMEDRIVER, CHROMIUM, AppPage, free_port, start_app, start_browser, stop_app
from visionllm_hf.app.checkpoint import load_checkpoint
from visionllm_hf.app.inputs import MAX_SIDE, MIN_SIDE, check_request, read_upload
from visionllm_hf.app.requests import Request, chat_prompt, record_json, run_request
from visionllm_hf.app.tasks import CHAT, available_tasks
from visionllm_hf.app.visual_prompt import BOX, COLOUR, POINT, add_click, image_point, preview, region_of
from visionllm_hf.cli import main
from visionllm_hf.demo import demo_inputs
from visionllm_hf.synthetic import KINDS

needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="the browser tests need Debian's chromium and chromium-driver on PATH "
    "(apt-get install chromium chromium-driver); not found",
)


@pytest.fixture(scope="module")
def scene():
    """Held-out synthetic scene 0 of the demo, with its largest shape's box."""
    return demo_inputs(1, photos=False)[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, scene):
    """The uploads: a scene, a text file, a 1x1 image and a 10,000 px image."""
    folder = tmp_path_factory.mktemp("uploads")
    scene["image"].save(folder / "scene.png")
    (folder / "notes.txt").write_text("not an image\n")
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "tiny.png")
    Image.new("RGB", (10_000, 10_000), (255, 255, 255)).save(folder / "huge.png")  # 0.3 MB: one colour
    return folder


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint()


# ---- input checks and visual prompts (no model) --------------------------------------------------------------


@pytest.mark.parametrize(("name", "message"), [
    ("notes.txt", "notes.txt is not an image this app can read"),
    ("tiny.png", f"1x1 pixels, too small to see anything in: upload an image of at least {MIN_SIDE}x{MIN_SIDE}"),
    ("huge.png", f"10000x10000 pixels: this app takes images up to {MAX_SIDE} pixels a side"),
])
def test_bad_uploads_are_refused_with_a_readable_message(files, name, message):
    with pytest.raises(ValueError, match=message):
        read_upload(files / name)


def test_an_upload_becomes_an_rgb_image(files, tmp_path, scene):
    assert np.array_equal(np.asarray(read_upload(files / "scene.png")), np.asarray(scene["image"]))
    Image.new("LA", (20, 30)).save(tmp_path / "grey.png")
    assert read_upload(tmp_path / "grey.png").mode == "RGB"


@pytest.mark.parametrize(("task", "image", "fields", "message"), [
    ("detection", None, {}, "upload an image or pick an example first: detection needs an image"),
    ("detection", "image", {"categories": []}, "detection needs the categories to find"),
    ("grounding", "image", {}, "grounding needs an expression"),
    ("region_caption", "image", {}, "region caption needs a visual prompt: click two opposite corners"),
    (CHAT, "image", {"text": "  "}, "type a question first"),
])
def test_a_request_missing_what_its_task_needs_says_what_to_give(scene, task, image, fields, message):
    arguments = {"text": None, "categories": ["circle"], "expression": None, "region": None, **fields}
    with pytest.raises(ValueError, match=message):
        check_request(task, scene["image"] if image else None, **arguments)


def test_two_clicks_make_a_box_in_image_pixels_and_one_a_point():
    clicks = add_click([], 50, 40, BOX)
    assert region_of(clicks, BOX) is None  # the first corner alone is no region yet
    clicks = add_click(clicks, 10, 90, BOX)
    assert region_of(clicks, BOX) == {"box": [10.0, 40.0, 50.0, 90.0]}
    assert len(add_click(clicks, 5, 5, BOX)) == 1  # a third click starts a new box
    assert add_click([[3, 3]], 3, 70, BOX) == [[3.0, 70.0]]  # no width: the click starts again
    assert region_of(add_click(clicks, 7, 8, POINT), POINT) == {"point": [7.0, 8.0]}


def test_small_images_are_shown_enlarged_and_clicks_map_back(scene):
    image = scene["image"]  # 128 px: shown 3 times larger
    shown = preview(image, [[10, 20], [60, 90]], BOX)
    assert shown.size == (3 * image.width, 3 * image.height)
    assert shown.getpixel((30, 150)) == COLOUR  # the box's left edge, in shown pixels
    assert image_point(image, 30, 60) == (10, 20)
    assert preview(Image.new("RGB", (800, 600)), [], BOX).size == (800, 600)


def test_generation_and_editing_are_offered_only_with_their_decoders(checkpoint):
    names = [task.name for task in checkpoint.tasks]
    assert "detection" in names and "region_caption" in names and CHAT in names
    assert "text_to_image" not in names and "image_editing" not in names  # the demo model has no diffusion decoder
    config = copy.deepcopy(checkpoint.model.config)
    config.routing_decoders = {**config.routing_decoders, "gen": "text_to_image", "edit": "image_editing"}
    assert {"text_to_image", "image_editing"} <= {task.name for task in available_tasks(config)}


# ---- requests on the shipped demo model ----------------------------------------------------------------------


@pytest.mark.parametrize("task", ["caption", "detection", "grounding", "instance_segmentation",
                                  "referring_segmentation", "pose", "region_caption", "region_classification",
                                  "interactive_segmentation"])
def test_every_task_of_the_demo_model_gives_a_picture_text_and_json(checkpoint, scene, task):
    image = scene["image"]
    region = {"point": scene["point"]} if task == "interactive_segmentation" else {"box": scene["box"]}
    request = Request(task, image, categories=list(KINDS), expression=scene["expression"],
                      region=region if task.startswith(("region", "interactive")) else None, threshold=0.0)
    reply = run_request(checkpoint, request)
    assert reply.picture.size == image.size
    assert reply.record["task"] == task and reply.record["text"] == reply.text
    objects = reply.record["objects"]
    if task.startswith("region"):
        assert reply.text.strip() and not objects and reply.record["regions"] == [region]
    elif task != "caption":
        assert objects, f"{task} found nothing at threshold 0"
        field = {"pose": "keypoints", "referring_segmentation": "mask", "interactive_segmentation": "mask"}.get(
            task, "box")
        assert all(obj[field] for obj in objects), f"{task} objects without {field}: {objects}"
    if task == "grounding":
        assert len(objects) == 1  # the best box only
    assert json_round_trip(reply.record)


def json_round_trip(record: dict) -> bool:
    import json

    return json.loads(record_json(record)) == record


def test_the_chat_keeps_the_conversation(checkpoint, scene):
    first = run_request(checkpoint, Request(CHAT, scene["image"], text="How many shapes are there?"))
    history = [("How many shapes are there?", first.text)]
    request = Request(CHAT, scene["image"], text="What colour is the largest one?", history=history)
    prompt = chat_prompt(checkpoint.processor, request)
    assert prompt.count("<image>") == 1 and prompt.index("How many shapes") < prompt.index(first.text)
    assert prompt.index(first.text) < prompt.index("What colour is the largest one?")
    second = run_request(checkpoint, request)
    assert second.record["question"] == "What colour is the largest one?" and second.text.strip()


def test_a_routing_token_typed_in_a_question_is_refused_by_the_library(checkpoint, scene):
    with pytest.raises(ValueError, match="routing tokens"):
        run_request(checkpoint, Request(CHAT, scene["image"], text="find the circle [DET]"))


# ---- the command ---------------------------------------------------------------------------------------------


def test_app_help_imports_nothing_heavy():
    script = (
        "import sys, visionllm_hf_cli\n"
        "try:\n    visionllm_hf_cli.main(['app', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('IMPORTED', [m for m in ('torch', 'transformers', 'visionllm_hf', 'gradio') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("usage: visionllm-hf app") and "--model" in result.stdout
    assert result.stdout.rstrip().endswith("IMPORTED []"), result.stdout[-200:]


def test_app_names_a_missing_model_folder_before_loading(tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        main(["app", "--model", str(tmp_path / "no-such-checkpoint")])


# ---- the page in a real browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`visionllm-hf app` (the shipped demo model) on a free port: its URL and seconds to serve."""
    port = free_port()
    process, seconds = start_app(port, tmp_path_factory.mktemp("app") / "app.log")
    print(f"visionllm-hf app served its page after {seconds:.1f} s")
    yield f"http://127.0.0.1:{port}/", seconds
    stop_app(process)


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.fixture
def page(served, browser):
    page = AppPage(browser, served[0])
    page.open()
    return page


def test_a_detection_request_through_the_api_gets_boxes(served, files):
    """The page's /run endpoint, as gradio_client calls it (how fast: benches/app.py)."""
    from gradio_client import Client, handle_file

    client = Client(served[0], verbose=False)
    client.predict(handle_file(str(files / "scene.png")), api_name="/upload")
    _, answer, record, status, *_ = client.predict("detection", BOX, "", ", ".join(KINDS), "", 0.3, api_name="/run")
    assert "detection: answered" in status and '"box": [' in record


@needs_browser
def test_detection_region_caption_and_chat_in_the_browser(page, files, scene, tmp_path):
    image = scene["image"]
    assert "image 128x128" in page.upload(files / "scene.png")
    page.choose_task("detection")
    assert "detection: answered" in page.run()
    record = page.record
    assert record["task"] == "detection" and page.answer == record["text"] != ""
    boxes = [obj["box"] for obj in record["objects"]]
    assert boxes and all(len(box) == 4 and 0 <= box[0] < box[2] <= 128 and 0 <= box[1] < box[3] <= 128
                         for box in boxes)
    assert {obj["label"] for obj in record["objects"]} <= set(KINDS)
    drawn = np.asarray(page.annotated_image())
    assert drawn.shape == (128, 128, 3)
    for x1, y1, _, y2 in boxes:  # each box's left edge is drawn where the JSON says
        assert (drawn[round((y1 + y2) / 2), round(x1)] != np.asarray(image)[round((y1 + y2) / 2), round(x1)]).any()
    page.screenshot(tmp_path / "1_detection.png")

    x1, y1, x2, y2 = scene["box"]
    page.choose_task("region caption")
    page.click_image(x1, y1, image.width)
    assert page.prompt.startswith("first corner")
    page.click_image(x2, y2, image.width)
    shown_box = [float(v) for v in page.prompt.removeprefix("box [").removesuffix("]").split(",")]
    assert np.allclose(shown_box, scene["box"], atol=1.5), (page.prompt, scene["box"])
    assert "region caption: answered" in page.run()
    assert page.answer.strip() and page.record["regions"][0]["box"] == pytest.approx(scene["box"], abs=1.5)
    assert (np.asarray(page.annotated_image()) == COLOUR).all(axis=-1).any()  # the box asked about is drawn
    page.screenshot(tmp_path / "2_region_caption.png")

    page.choose_task("chat / VQA")
    assert "chat / VQA: answered" in page.run("How many shapes are there?")
    page.run("What colour is the circle?")
    messages = page.chat_messages()
    assert [role for role, _ in messages] == ["user", "bot", "user", "bot"]
    assert messages[0][1] == "How many shapes are there?" and messages[2][1] == "What colour is the circle?"
    assert messages[3][1] == " ".join(page.answer.split()) != ""  # the page's HTML collapses runs of spaces
    page.screenshot(tmp_path / "3_chat.png")


@needs_browser
def test_bad_uploads_show_a_message_and_the_app_keeps_serving(page, files, tmp_path):
    page.choose_task("detection")
    assert "detection needs an image" in page.run()
    page.screenshot(tmp_path / "4_no_image.png")
    assert "notes.txt is not an image this app can read" in page.upload(files / "notes.txt")
    page.screenshot(tmp_path / "5_text_file.png")
    assert "1x1 pixels, too small" in page.upload(files / "tiny.png")
    assert "10000x10000 pixels" in page.upload(files / "huge.png")
    page.screenshot(tmp_path / "6_huge_image.png")
    page.upload(files / "scene.png")
    assert "detection: answered" in page.run()
    assert page.record["objects"] and page.annotated_image() is not None
    page.screenshot(tmp_path / "7_served_after_errors.png")


# ---- other checkpoints ---------------------------------------------------------------------------------------


def test_a_model_without_decoders_answers_text_tasks_only(tiny_plain, scene):
    from visionllm_hf.app.checkpoint import LoadedCheckpoint

    model, processor = tiny_plain
    plain = LoadedCheckpoint(model, processor, "tiny", available_tasks(model.config))
    assert "detection" not in [task.name for task in plain.tasks] and CHAT in [task.name for task in plain.tasks]
    reply = run_request(plain, Request(CHAT, scene["image"], text="What is this?"))
    assert reply.record["objects"] == [] and reply.picture.size == scene["image"].size


def test_a_visionllm_v1_checkpoint_is_refused_by_name(tmp_path):
    assert main(["build", "--preset", "tiny-v1", "--out", str(tmp_path)]) == 0
    with pytest.raises(ValueError, match="runs VisionLLM v2 checkpoints"):
        load_checkpoint(tmp_path)
