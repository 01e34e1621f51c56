"""Screenshots of TensorBoard's tabs for the README, from real runs, with a real browser.

One command trains the runs it shows (those not there yet) and takes the pictures:

    pip install playwright          # drives the browser; no browser download needed (Debian: apt-get install chromium)
    python scripts/screenshots.py --train --logdir /tmp/shots/logs     # -> docs/images/tensorboard_*.png

--train first runs `lstm-mnist train --log-dir LOGDIR --name NAME ...` for each run of RUNS that LOGDIR
does not hold yet: `default`, the default settings, which the pictures show (a few minutes on a CPU),
and four small runs that differ from it, for the HPARAMS table. Without --train the runs must be there
already; the single-run views then show `default`, or the first run if there is none of that name.

Starts `tensorboard` on 127.0.0.1 at a free port, waits until it serves the
runs, then opens each view in headless Chromium through Playwright, which
also clicks what a reader would click (e.g. "Conceptual graph"). TensorBoard
is a JavaScript app that fetches its data after the page loads, so each view
is given a few seconds to render before the picture is taken. A view that
meets an error (a request to TensorBoard's data API answered 4xx/5xx, or an
error on the page's console) is reported, and the script then exits with
status 1. The PNGs are reduced to 256 colours to keep the repository small.
The server and the browser are always stopped.
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

# name -> the arguments of `lstm-mnist train` besides --log-dir and --name.
RUNS = {
    "default": [],
    "smoke-test": ["--epochs", "1", "--train-examples", "2000"],
    "gru": ["--cell", "gru", "--epochs", "2", "--train-examples", "10000"],
    "lstm128x2-bi": ["--layers", "2", "--bidirectional", "--dropout", "0.2", "--epochs", "1",
                     "--train-examples", "5000"],
    "scratch-peepholes": ["--cell", "scratch", "--peepholes", "--epochs", "1", "--train-examples", "5000"],
}

# name -> (URL fragment, viewport height, what to click once the page has rendered).
# tagFilter is the regular expression in the tab's tag search box, regexInput the one in its run filter;
# {run} is the run the view shows, {train_run} its train/ folder.
VIEWS = {
    "scalars": ("#scalars&tagFilter=epoch%2F%7Coptimizer%7Cthroughput&_smoothingWeight=0&regexInput=^{run}/",
                1100, []),
    # At 1400 pixels the metric columns start at the right edge: untick two settings all runs share.
    "hparams": ("#hparams", 420, ["untick units", "untick learning_rate"]),
    "text_final": ("#text&tagFilter=final", 900, []),
    "images_reading": ("#images&tagFilter=reading_row_by_row%7Cas_timesteps&regexInput=^{run}/", 740, []),
    "images_confusion": ("#images&tagFilter=confusion_matrix%7Cmisclassified&regexInput=^{run}/", 700, []),
    "histograms": ("#histograms&tagFilter=gate_activations%7Cweights_by_gate%2F.*%2Fbias&regexInput=^{run}/",
                   1250, []),
    # Nothing to click: the page must open on the traced step's op graph by itself.
    "graphs_train_step": ("#graphs&run={train_run}", 800, ["Fit to screen"]),
    "graphs": ("#graphs&run={train_run}", 800, ["tag keras", "Conceptual graph", "expand the model", "Fit to screen"]),
}
WIDTH = 1400


def train_runs(log_dir: Path) -> None:
    """Train every run of RUNS that `log_dir` does not hold yet (a finished run has its metrics.json)."""
    for name, arguments in RUNS.items():
        run_dir = log_dir / name
        if (run_dir / "metrics.json").is_file():
            continue
        if run_dir.exists():
            raise SystemExit(f"{run_dir} is an unfinished run: delete it (or resume it) and start again")
        command = [sys.executable, "-m", "lstm_mnist", "train", "--log-dir", str(log_dir), "--name", name, *arguments]
        print("training:", " ".join(command[1:]), flush=True)
        if subprocess.run(command).returncode != 0:
            raise SystemExit(f"training {name} failed; see above")


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


def take(page, url: str, height: int, clicks: list[str], path: Path, settle_ms: int) -> list[str]:
    """Open `url`, click `clicks`, save the screenshot to `path`; return the errors the page met."""
    errors = []
    page.on("response", lambda response: errors.append(f"HTTP {response.status} {response.url}")
            if response.status >= 400 and "/data/" in response.url else None)
    page.on("console", lambda message: errors.append(f"console: {message.text[:300]}")
            if message.type == "error" else None)
    page.set_viewport_size({"width": WIDTH, "height": height})
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(settle_ms)
    for label in clicks:
        if label.startswith("tag "):  # the GRAPHS tab ignores a tag in the URL: pick it from the Tag menu
            page.locator("paper-dropdown-menu").locator("visible=true").nth(1).click()
            page.get_by_text(label[len("tag "):], exact=True).locator("visible=true").first.click()
        elif label.startswith("untick "):  # a setting's checkbox in the HPARAMS tab's left pane
            page.locator("paper-checkbox", has_text=label[len("untick "):]).first.click()
        elif label == "expand the model":  # the first box: the Keras model, or the traced function
            page.locator("g.node").first.dblclick()  # the graph opens as one box, the model; show its layers
        else:
            page.get_by_text(label, exact=True).locator("visible=true").first.click()
        page.wait_for_timeout(settle_ms)
    page.screenshot(path=str(path))
    # 256 colours: TensorBoard's flat UI loses nothing visible, and the file shrinks several times.
    Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", required=True, help="the --log-dir of the runs to show")
    parser.add_argument("--train", action="store_true",
                        help=f"first train the runs of RUNS ({', '.join(RUNS)}) that LOGDIR does not hold yet")
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs (default: docs/images)")
    parser.add_argument("--settle-ms", type=int, default=4000, help="time each page gets to render, after each click")
    parser.add_argument("--only", nargs="*", choices=sorted(VIEWS), help="take only these shots")
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("this script drives Chromium through Playwright: pip install playwright") from None

    browser_path = find_chromium()
    if args.train:
        train_runs(Path(args.logdir))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failed = []
    try:
        runs = wait_for_runs(base)
        shown = "default" if "default/train" in runs else sorted(runs)[0].split("/")[0]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                for name, (fragment, height, clicks) in VIEWS.items():
                    if args.only and name not in args.only:
                        continue
                    page = browser.new_page()  # a fresh page: no checkbox or selection left from the last view
                    url = base + "/" + fragment.format(run=urllib.parse.quote(shown, safe=""),
                                                       train_run=urllib.parse.quote(f"{shown}/train", safe=""))
                    path = out / f"tensorboard_{name}.png"
                    errors = take(page, url, height, clicks, path, args.settle_ms)
                    page.close()
                    print(f"{path}  ({path.stat().st_size // 1024} KiB)  {url}")
                    for error in errors:
                        print(f"  error on the page: {error}")
                    failed += [name] if errors else []
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    if failed:
        raise SystemExit(f"TensorBoard showed an error in: {', '.join(failed)}")


if __name__ == "__main__":
    main()
