"""Screenshots of TensorBoard's tabs for the README, from a real run, with a real browser.

    lstm-mnist train --log-dir /tmp/shots/logs             # a default run (a few minutes on a CPU)
    pip install playwright                                 # drives the browser; no browser download needed
    python scripts/screenshots.py --logdir /tmp/shots/logs  # -> docs/images/tensorboard_*.png

Starts `tensorboard` on 127.0.0.1 at a free port, waits until it serves the
run, then opens each view in headless Chromium (Debian: `apt-get install
chromium`) through Playwright, which can also click what a reader would
click (e.g. "Show actual image size", "Conceptual graph"). TensorBoard is a
JavaScript app that fetches its data after the page loads, so each view is
given a few seconds to render before the picture is taken. The PNGs are
reduced to 256 colours to keep the repository small. The server and the
browser are always stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image

# name -> (URL fragment, viewport height, what to click once the page has rendered).
# The fragment's tagFilter is the regular expression in the tab's search box.
VIEWS = {
    "scalars": ("#scalars&tagFilter=epoch%2F%7Coptimizer%7Cthroughput&_smoothingWeight=0", 1100, []),
    "images_reading": ("#images&tagFilter=reading_row_by_row", 820, ["Show actual image size"]),
    "images_confusion": ("#images&tagFilter=confusion_matrix%7Cmisclassified", 900, ["Show actual image size"]),
    "histograms": ("#histograms&tagFilter=gate_activations%7Cweights_by_gate%2F.*%2Fbias", 1250, []),
    "graphs": ("#graphs&run={train_run}", 800, ["tag keras", "Conceptual graph", "expand the model", "Fit to screen"]),
    "graphs_train_step": ("#graphs&run={train_run}", 800, ["tag train_step", "Fit to screen"]),
}
WIDTH = 1400


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_runs(base: str, timeout: float = 120) -> list[str]:
    """The runs TensorBoard serves, once it serves a test run (the last folder a run writes)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/data/plugin/scalars/tags", timeout=10) as response:
                runs = list(json.loads(response.read()))
            if any(run.endswith("/test") for run in runs):
                return runs
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"TensorBoard at {base} served no finished run within {timeout:.0f}s")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no Chromium found; on Debian: apt-get install chromium")


def take(page, url: str, height: int, clicks: list[str], path: Path, settle_ms: int) -> None:
    page.set_viewport_size({"width": WIDTH, "height": height})
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(settle_ms)
    for label in clicks:
        if label.startswith("tag "):  # the GRAPHS tab ignores a tag in the URL: pick it from the Tag menu
            page.locator("paper-dropdown-menu").locator("visible=true").nth(1).click()
            page.get_by_text(label[len("tag "):], exact=True).locator("visible=true").first.click()
        elif label == "expand the model":  # the first box: the Keras model, or the traced function
            page.locator("g.node").first.dblclick()  # the graph opens as one box, the model; show its layers
        else:
            page.get_by_text(label, exact=True).locator("visible=true").first.click()
        page.wait_for_timeout(settle_ms)
    page.screenshot(path=str(path))
    # 256 colours: TensorBoard's flat UI loses nothing visible, and the file shrinks several times.
    Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", required=True, help="the --log-dir of the run(s) to show")
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs (default: docs/images)")
    parser.add_argument("--settle-ms", type=int, default=4000, help="time each page gets to render, after each click")
    parser.add_argument("--only", nargs="*", choices=sorted(VIEWS), help="take only these shots")
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("this script drives Chromium through Playwright: pip install playwright") from None

    browser_path = find_chromium()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        runs = wait_for_runs(base)
        train_run = next(run for run in runs if run.endswith("/train"))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
            try:
                for name, (fragment, height, clicks) in VIEWS.items():
                    if args.only and name not in args.only:
                        continue
                    page = browser.new_page()  # a fresh page: no checkbox or selection left from the last view
                    url = base + "/" + fragment.format(train_run=urllib.parse.quote(train_run, safe=""))
                    path = out / f"tensorboard_{name}.png"
                    take(page, url, height, clicks, path, args.settle_ms)
                    page.close()
                    print(f"{path}  ({path.stat().st_size // 1024} KiB)  {url}")
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
