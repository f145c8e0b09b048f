"""How fast `visionllm-hf app` serves: seconds from the command to its page, and per detection request.

Starts `visionllm-hf app` (the shipped demo model, CPU) on a free port as a user would, waits until the page
answers, then sends detection requests on a held-out synthetic scene through `gradio_client` (request and reply
included) and prints the start time and the median request time against the goals (30 s and 5 s).

Run from the repository root (needs the `app` extra):

    python benches/app.py [--requests 5] [--smoke]
"""

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from visionllm_hf.synthetic import KINDS, make_scene

START_GOAL, REQUEST_GOAL = 30.0, 5.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(port: int, log: Path, timeout: float = 300) -> tuple[subprocess.Popen, float]:
    """`visionllm-hf app --port PORT` and the seconds until its page answered."""
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "visionllm_hf_cli", "app", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                if page.status == 200:
                    return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise SystemExit(f"the app did not serve within {timeout} s:\n{log.read_text()[-3000:]}")


def detection_seconds(port: int, image: Path, requests: int) -> list[float]:
    from gradio_client import Client, handle_file

    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    client.predict(handle_file(str(image)), api_name="/upload")
    seconds = []
    for _ in range(requests):
        begun = time.perf_counter()
        _, _, record, status, *_ = client.predict("detection", "box", "", ", ".join(KINDS), "", 0.3, api_name="/run")
        seconds.append(time.perf_counter() - begun)
        if "detection: answered" not in status or '"box": [' not in record:
            raise SystemExit(f"the detection request failed: {status}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one request: checks the bench runs (CI)")
    args = parser.parse_args()
    requests = 1 if args.smoke else args.requests
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "scene.png"
        make_scene(seed=12345, index=0).image.save(image)
        port = free_port()
        process, start_seconds = start(port, Path(folder) / "app.log")
        try:
            seconds = detection_seconds(port, image, requests)
        finally:
            process.terminate()
            process.wait(timeout=30)
    request_seconds = statistics.median(seconds)
    print(f"{'metric':<28}{'seconds':>9}{'goal':>7}")
    print(f"{'start to serving':<28}{start_seconds:>9.1f}{START_GOAL:>7.0f}  {'met' if start_seconds < START_GOAL else 'MISSED'}")
    print(f"{'detection request (median)':<28}{request_seconds:>9.2f}{REQUEST_GOAL:>7.0f}  "
          f"{'met' if request_seconds < REQUEST_GOAL else 'MISSED'}")


if __name__ == "__main__":
    main()
