"""Start `visionllm-hf app` on a free port and drive its page in Debian's headless chromium (selenium).

Nothing downloads a browser: the system's `chromium` and `chromedriver` (apt packages chromium, chromium-driver)
are used, or the browser tests skip.
"""

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT = 90  # seconds any one step of the page may take (a busy 2-core machine; the model answers in under one)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(port: int, log: Path, timeout: float = 180) -> tuple[subprocess.Popen, float]:
    """`visionllm-hf app --port PORT` in a subprocess, and the seconds until its page answered."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "visionllm_hf_cli", "app", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as page:
                if page.status == 200:
                    return process, time.perf_counter() - start
        except OSError:
            time.sleep(0.25)
    stop_app(process)
    raise RuntimeError(f"the app did not answer at {url} within {timeout} s:\n{log.read_text()[-3000:]}")


def stop_app(process: subprocess.Popen):
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class AppPage:
    """The page as a user sees it: what they do (upload, choose, click, run) and what they read."""

    def __init__(self, driver, url: str):
        self.driver = driver
        self.url = url

    def open(self):
        self.driver.get(self.url)
        self._wait(lambda: self._find("#run") and self._find("input[type=file]"), "the page to load")

    # what the user does
    def upload(self, path: Path) -> str:
        """Upload a file with the upload button; returns the status line once it changed."""
        before = self.status
        self._find("input[type=file]").send_keys(str(path))
        return self._wait(lambda: not self.busy and self.status != before and self.status,
                          f"the page to take {path.name}")

    def choose_task(self, label: str):
        self._click(self._find(f'#task label[data-testid="{label}-radio-label"]'))
        self._wait(lambda: self._find(f'#task label[data-testid="{label}-radio-label"] input').is_selected(),
                   f"task {label} to be chosen")

    def click_image(self, x: float, y: float, image_width: int):
        """Click image pixel `(x, y)` on the shown image (enlarged or not: `image_width` is the image's own)."""
        from selenium.webdriver.common.action_chains import ActionChains

        before = self.prompt
        shown = self._find("#image img")
        left, top, width, height, natural_width, natural_height = self.driver.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "return [r.left, r.top, r.width, r.height, arguments[0].naturalWidth, arguments[0].naturalHeight];", shown)
        factor = natural_width / image_width  # the page enlarges small images by a whole factor
        scale = min(width / natural_width, height / natural_height, 1)  # gradio's mapping of a click to pixels
        offset_x, offset_y = (width - natural_width * scale) / 2, (height - natural_height * scale) / 2
        dx = offset_x + (x * factor + 0.5) * scale - width / 2
        dy = offset_y + (y * factor + 0.5) * scale - height / 2
        ActionChains(self.driver).move_to_element_with_offset(shown, round(dx), round(dy)).click().perform()
        self._wait(lambda: self.prompt != before, "the click to be taken")

    def run(self, question: str | None = None) -> str:
        """
        Press Run, or type `question` and press Enter; returns the status line once the answer came.
        """
        from selenium.webdriver.common.keys import Keys

        before = (self.status, self.json_text)
        if question is None:
            self._click(self._find("#run"))
        else:
            box = self._find("#text textarea")
            box.clear()
            box.send_keys(question + Keys.ENTER)
        return self._wait(lambda: not self.busy and (self.status, self.json_text) != before and self.status,
                          "the answer")

    # what the user reads
    @property
    def status(self) -> str:
        """The status line's message (not the progress gradio shows over it while a request runs)."""
        element = self._find('#status [data-testid="markdown"]')
        return element.text.strip() if element else ""

    @property
    def busy(self) -> bool:
        """Whether a request is running: some output shows gradio's progress."""
        return bool(self.driver.execute_script(
            "return [...document.querySelectorAll('[data-testid=\"status-tracker\"]')]"
            ".some(t => !t.classList.contains('hide') && t.textContent.trim() !== '');"
        ))

    @property
    def prompt(self) -> str:
        return self._find("#prompt textarea").get_attribute("value")

    @property
    def answer(self) -> str:
        return self._find("#answer textarea").get_attribute("value")

    @property
    def json_text(self) -> str:
        return self._find("#json textarea").get_attribute("value")

    @property
    def record(self) -> dict:
        return json.loads(self.json_text)

    def chat_messages(self) -> list[tuple[str, str]]:
        """(role, text) of every message of the conversation box, in order."""
        from selenium.webdriver.common.by import By

        elements = self.driver.find_elements(By.CSS_SELECTOR, '#chat [data-testid="user"], #chat [data-testid="bot"]')
        return [(element.get_attribute("data-testid"), element.text.strip()) for element in elements]

    def annotated_image(self) -> Image.Image | None:
        """The answer image the page shows, fetched from its `src` as the browser did."""
        shown = self._find("#annotated img")
        if shown is None or not shown.get_attribute("src"):
            return None
        with urllib.request.urlopen(shown.get_attribute("src"), timeout=30) as response:
            return Image.open(io.BytesIO(response.read())).convert("RGB")

    def screenshot(self, path: Path) -> Path:
        self.driver.save_screenshot(str(path))
        return path

    def _find(self, selector: str):
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.CSS_SELECTOR, selector)
        return found[0] if found else None

    def _click(self, element):
        # a script click: a toast in the corner (gr.Warning) cannot swallow it
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", element)

    def _wait(self, condition, what: str):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda _: condition(), message=f"waited {WAIT} s for {what}; the page says: {self.status!r}"
        )
