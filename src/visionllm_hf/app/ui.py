"""The page: an image (uploaded or an example) to click a visual prompt on, a task, and the answer.

`build_app(checkpoint)` lays out a `gradio.Blocks` and wires its events to the functions of `AppEvents`, which
check the input (`inputs.py`), keep the clicks (`visual_prompt.py`) and run the request (`requests.py`). A
message for the user goes to the status line (and a toast); the app keeps serving the next request.
"""

from pathlib import Path

import gradio as gr

from ..demo import DEMO_MODEL
from .examples import DEFAULT_CATEGORIES, Example
from .inputs import check_request, parse_categories, read_upload
from .requests import Request, record_json, run_request
from .tasks import CHAT, TASKS_BY_NAME, TEXT_LABELS
from .visual_prompt import BOX, DISPLAY_SIDE, POINT, add_click, describe, image_point, preview, region_of

THEME = gr.themes.Default(  # system fonts: nothing is fetched from a font server (offline machines, Spaces alike)
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)
CSS = """
#json textarea { font-family: ui-monospace, monospace; font-size: 12px; }
#annotated button, #annotated img { width: 100%; height: 100%; }
#annotated img { object-fit: contain; image-rendering: pixelated; }
"""  # the answer is shown as large as its box allows (small scenes enlarged, pixels kept sharp)
THRESHOLD_TASKS = ("detection", "grounding", "instance_segmentation", "pose")


class AppEvents:
    """
    What each event of the page does. Functions return the new values of their outputs, in the order `build_app`
    lists them (`gr.skip()` leaves one as it is).
    """

    def __init__(self, checkpoint, examples: list[Example]):
        self.checkpoint = checkpoint
        self.examples = examples

    def pick_example(self, event: gr.SelectData):
        example = self.examples[event.index]
        return (*self._new_image(example.image), example.expression)

    def upload(self, path: str | None):
        try:
            image = read_upload(path)
        except ValueError as error:
            return (*[gr.skip()] * 9, _message(error, "Could not use this file"), gr.skip())
        return (*self._new_image(image), gr.skip())

    def _new_image(self, image):
        """The image becomes the page's; prompt, conversation and answer start again."""
        status = f"image {image.width}x{image.height}: choose a task and press Run"
        return image, [], [], preview(image, [], BOX), describe([], BOX), [], None, "", "", status

    def click(self, image, clicks: list, mode: str, event: gr.SelectData):
        if image is None:
            return gr.skip(), gr.skip(), "upload an image or pick an example first, then click on it"
        clicks = add_click(clicks, *image_point(image, *event.index), mode)
        return clicks, preview(image, clicks, mode), describe(clicks, mode)

    def clear_prompt(self, image, mode: str):
        return [], gr.skip() if image is None else preview(image, [], mode), describe([], mode)

    def choose_task(self, task: str):
        """Show the fields the task reads (text, categories, expression, threshold, conversation, its button)."""
        shown = fields_shown(task)
        return gr.update(visible=shown[0], label=TEXT_LABELS.get(task, "Text")), *map(_visible, shown[1:])

    def run(self, task, image, clicks, mode, text, categories, expression, threshold, history):
        """Answer the task: (annotated image, answer text, JSON, status, conversation, chat state, text box)."""
        unchanged = (gr.skip(), gr.skip(), gr.skip())
        try:
            names = parse_categories(categories)
            region = region_of(clicks, mode)
            check_request(task, image, text, names, expression, region)
            region = region if TASKS_BY_NAME[task].needs == "region" else None
            request = Request(
                task, image if TASKS_BY_NAME[task].needs_image else None, text=(text or "").strip() or None,
                categories=names, expression=(expression or "").strip() or None, region=region,
                history=list(history) if task == CHAT else [], threshold=threshold,
            )
            reply = run_request(self.checkpoint, request)
        except (ValueError, TypeError) as error:  # the library's word on input it cannot take
            return None, "", "", _message(error), *unchanged
        found = reply.record["objects"]
        counted = f", {len(found)} object(s)" if found or TASKS_BY_NAME[task].routing else ""
        status = f"{TASKS_BY_NAME[task].label}: answered in {reply.record['seconds']:.2f} s{counted}"
        status = "\n\n".join([status, *(f"⚠️ {warning}" for warning in reply.warnings)])
        record = record_json(reply.record)
        if task != CHAT:
            return reply.picture, reply.text, record, status, *unchanged
        history = [*history, (request.text, reply.text)]
        return reply.picture, reply.text, record, status, _chat_messages(history), history, ""

    def new_conversation(self):
        return [], [], "new conversation: ask a question about the image"


def fields_shown(task: str) -> tuple[bool, ...]:
    """Whether each of text, categories, expression, threshold, conversation and its button is shown for `task`."""
    needs = TASKS_BY_NAME[task].needs
    chat = task == CHAT
    return needs == "text", needs == "categories", needs == "expression", task in THRESHOLD_TASKS, chat, chat


def _visible(shown: bool):
    return gr.update(visible=shown)


def _message(error: Exception | str, what: str = "Could not run") -> str:
    """The status line of a request that could not run (or an upload the app cannot use), shown as a toast too."""
    text = str(error)
    gr.Warning(text)
    return f"⚠️ **{what}:** {text}"


def _title(name: str) -> str:
    return "the demo model shipped with visionllm-hf" if Path(name).resolve() == DEMO_MODEL.resolve() else f"`{name}`"


def _chat_messages(history: list[tuple[str, str]]) -> list[dict]:
    return [message for question, answer in history
            for message in ({"role": "user", "content": question}, {"role": "assistant", "content": answer})]


def build_app(checkpoint, examples: list[Example]) -> gr.Blocks:
    """The page for `checkpoint` (a `LoadedCheckpoint`), with `examples` to pick from."""
    events = AppEvents(checkpoint, examples)
    tasks = checkpoint.tasks
    first = "detection" if "detection" in (task.name for task in tasks) else tasks[0].name
    shown = fields_shown(first)
    with gr.Blocks(title="VisionLLM", analytics_enabled=False) as app:
        image_state, clicks_state, chat_state = gr.State(None), gr.State([]), gr.State([])
        gr.Markdown(
            f"## VisionLLM: {_title(checkpoint.name)}\n"
            "Pick an example or upload an image, choose a task and press Run. "
            "Region tasks read the visual prompt: click two opposite corners of a box on the image (or one point)."
        )
        with gr.Row():
            with gr.Column():
                gallery = gr.Gallery(
                    value=[(example.image, example.name) for example in examples], label="Examples (click one)",
                    columns=6, height=150, object_fit="cover", allow_preview=False, interactive=False,
                    elem_id="examples",
                )
                upload = gr.UploadButton("Upload an image", type="filepath", elem_id="upload")
                image = gr.Image(label="Image (click to draw the visual prompt)", type="pil", format="png",
                                 interactive=False, height=DISPLAY_SIDE + 40, elem_id="image")
                with gr.Row():
                    mode = gr.Radio([("box: two corners", BOX), ("point", POINT)], value=BOX, label="Draw",
                                    elem_id="mode")
                    clear = gr.Button("Clear prompt", size="sm")
                prompt_text = gr.Textbox(describe([], BOX), label="Visual prompt of region tasks", interactive=False,
                                         elem_id="prompt")
            with gr.Column():
                task = gr.Radio([(item.label, item.name) for item in tasks], value=first, label="Task", elem_id="task")
                text = gr.Textbox(label=TEXT_LABELS.get(first, "Text"), visible=shown[0], elem_id="text")
                categories = gr.Textbox(DEFAULT_CATEGORIES, label="Categories (comma-separated)", visible=shown[1],
                                        elem_id="categories")
                expression = gr.Textbox(label="Expression (the object to find)", visible=shown[2], elem_id="expression")
                threshold = gr.Slider(0, 1, value=0.3, step=0.05, label="Score threshold", visible=shown[3],
                                      elem_id="threshold")
                run = gr.Button("Run", variant="primary", elem_id="run")
                status = gr.Markdown(label="Status", elem_id="status")
                chatbot = gr.Chatbot(label="Conversation", height=220, visible=shown[4], elem_id="chat")
                new_chat = gr.Button("New conversation", size="sm", visible=shown[5])
                annotated = gr.Image(label="Answer", type="pil", format="png", interactive=False, height=400,
                                     elem_id="annotated")
                answer = gr.Textbox(label="Answer text", interactive=False, elem_id="answer")
                record = gr.Textbox(label="JSON", lines=12, max_lines=30, interactive=False, elem_id="json")

        new_image = [image_state, clicks_state, chat_state, image, prompt_text, chatbot, annotated, answer, record,
                     status, expression]
        prompt = [clicks_state, image, prompt_text]
        fields = [text, categories, expression, threshold, chatbot, new_chat]
        run_inputs = [task, image_state, clicks_state, mode, text, categories, expression, threshold, chat_state]
        gallery.select(events.pick_example, None, new_image, api_name="pick_example")
        upload.upload(events.upload, upload, new_image, api_name="upload")
        image.select(events.click, [image_state, clicks_state, mode], prompt, api_visibility="private")
        gr.on([mode.change, clear.click], events.clear_prompt, [image_state, mode], prompt, api_name="clear_prompt")
        task.change(events.choose_task, task, fields, api_name="choose_task")
        gr.on([run.click, text.submit], events.run, run_inputs,
              [annotated, answer, record, status, chatbot, chat_state, text], api_name="run")
        new_chat.click(events.new_conversation, None, [chatbot, chat_state, status], api_name="new_conversation")
    return app


__all__ = ["CSS", "THEME", "AppEvents", "build_app", "fields_shown"]
