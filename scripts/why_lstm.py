#!/usr/bin/env python
"""Why an LSTM: a SimpleRNN, a GRU and an LSTM on MNIST read as ever longer sequences.

    python scripts/why_lstm.py                # the README's figures and table (see the README for the time)

For every sequence length T in --lengths (each image read 784 / T pixels per
timestep, `--pixels-per-step`), the script trains every cell in --cells with
one fixed recipe (RECIPE below: the same units, learning-rate schedule,
epochs and seed for all). Each is an ordinary `lstm-mnist train` run in its
own folder, --log-dir/T<T>-<cell>, so TensorBoard shows every run in full
(`tensorboard --logdir logs/why_lstm`) and the script prints the command that
repeats it. A run that finished is read back and one that was interrupted is
resumed, so the script can be stopped (Ctrl-C) and started again.

Then it measures, at --flow-length, how strongly the input at each timestep
reaches the loss (lstm_mnist/gradient_flow.py), for each cell freshly built
(the very weights its run started from) and after training, and writes:

    <output-dir>/why_lstm.png       test accuracy against T, one line per cell; below it the learning curves at each T
    <output-dir>/gradient_flow.png  mean ||dL/dx_t|| for every timestep t at --flow-length, fresh and trained
    <log-dir>/results.md, .json     the table: cell x length x epochs -> test accuracy, minutes
    <log-dir>/summary/, gradient_flow/   the same numbers for TensorBoard (x-axis: T, or the timestep t)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Let the script run from a checkout that was not pip-installed.
sys.path.insert(0, str(ROOT))

from lstm_mnist.config import IMAGE_PIXELS, PIXELS_PER_STEP_CHOICES, Config, flag  # noqa: E402  (no TensorFlow yet)

# The cells compared: name -> (label, colour, the Config settings that make it).
CELLS = {
    "simple_rnn": ("SimpleRNN", "tab:red", {"cell": "simple_rnn"}),
    "gru": ("GRU", "tab:green", {"cell": "gru"}),
    "lstm": ("LSTM, forget bias 1", "tab:blue", {"cell": "lstm", "forget_bias_init": "one"}),
    "lstm_chrono": ("LSTM, chrono init", "tab:purple", {"cell": "lstm", "forget_bias_init": "chrono"}),
}
# Every training setting is written out here rather than taken from Config's defaults, so the
# experiment stays the same when the package's defaults change. --epochs, --learning-rate,
# --units and --seed are the script's own flags; the reading (pixels_per_step) follows from T.
RECIPE = dict(
    batch_size=128,
    lr_schedule="cosine",  # linear warmup, then half a cosine down to 0 at the last step
    warmup_epochs=0.5,
    clip_norm=1.0,
    layers=1,
    bidirectional=False,
    dropout=0.0,
    input_projection=0,
    permute_pixels=False,
    shift_pixels=0,  # the images as they are: shifting is the 28-row recipe's, not part of this comparison
    deterministic=False,
    log_every_steps=10,  # the learning curves are drawn from these points
)
DEFAULT_LENGTHS = (28, 56, 112, 196, 392)


def parse_arguments(argv, description: str = __doc__, one_length: bool = False):
    """why_lstm.py's flags; with one_length (scripts/gradient_flow.py), --length T instead of --lengths and --flow-length."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    if one_length:
        parser.add_argument("--length", type=int, default=DEFAULT_LENGTHS[-1],
                            help="the sequence length T of the runs and the picture (default %(default)s)")
    else:
        parser.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS),
                            help="sequence lengths T to compare; each must divide 784 (default: %(default)s)")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS),
                        help="cells to compare (default: all four)")
    parser.add_argument("--epochs", type=int, default=4, help="passes over the training set, every run (default 4)")
    parser.add_argument("--learning-rate", type=float, default=3e-3,
                        help="Adam's peak learning rate, every run (default 3e-3)")
    parser.add_argument("--units", type=int, default=128, help="hidden units of every cell (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every run's weights and batch order (default 0)")
    if not one_length:
        parser.add_argument("--flow-length", type=int, default=392,
                            help="the T at which the gradient flow is drawn; one of --lengths (default 392)")
    parser.add_argument("--flow-images", type=int, default=1000,
                        help="validation images the gradient flow is averaged over (default 1000)")
    parser.add_argument("--train-examples", type=int, default=0, help="train on the first N images only (0 = all)")
    parser.add_argument("--val-size", type=int, default=5_000, help="validation images (default 5000)")
    parser.add_argument("--test-examples", type=int, default=0, help="test on the first N images only (0 = all)")
    parser.add_argument("--data", default="", help="as lstm-mnist train --data (default: find MNIST as it does)")
    parser.add_argument("--log-dir", type=Path, default=Path("logs") / "why_lstm",
                        help="one run folder per cell and length, and the summaries (default logs/why_lstm)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "docs" / "images",
                        help="where why_lstm.png and gradient_flow.png go (default docs/images)")
    arguments = parser.parse_args(argv)
    if one_length:
        arguments.lengths, arguments.flow_length = [arguments.length], arguments.length
    wrong = [length for length in arguments.lengths if length <= 0 or IMAGE_PIXELS % length]
    if wrong:
        parser.error(f"--{'length' if one_length else 'lengths'} must divide {IMAGE_PIXELS} (T = 784 / pixels per "
                     f"step), got {', '.join(map(str, wrong))}; possible: "
                     f"{', '.join(str(IMAGE_PIXELS // k) for k in reversed(PIXELS_PER_STEP_CHOICES))}")
    if arguments.flow_length not in arguments.lengths:
        parser.error(f"--flow-length must be one of --lengths {arguments.lengths}, got {arguments.flow_length}")
    if min(arguments.epochs, arguments.units, arguments.flow_images, arguments.val_size) <= 0:
        parser.error("--epochs, --units, --flow-images and --val-size must be positive (the gradient flow is "
                     "measured on validation images)")
    if arguments.output_dir.exists() and not arguments.output_dir.is_dir():
        parser.error(f"--output-dir {arguments.output_dir} is a file, not a folder; pass a folder for the pictures")
    arguments.lengths = sorted(set(arguments.lengths))
    for length in arguments.lengths:  # every other value is checked as lstm-mnist train checks it, before any run
        for cell in arguments.cells:
            try:
                run_config(arguments, length, cell).validate()
            except ValueError as error:
                parser.error(str(error))
    return arguments


def run_config(arguments, length: int, cell: str) -> Config:
    """The Config of one run: RECIPE, the cell's settings, and the reading that gives `length` timesteps."""
    return Config(**RECIPE, **CELLS[cell][2], pixels_per_step=IMAGE_PIXELS // length, epochs=arguments.epochs,
                  learning_rate=arguments.learning_rate, units=arguments.units, seed=arguments.seed,
                  train_examples=arguments.train_examples, val_size=arguments.val_size,
                  test_examples=arguments.test_examples, data=arguments.data,
                  log_dir=str(arguments.log_dir), name=f"T{length:03d}-{cell}")


def command_for(config: Config) -> str:
    """The `lstm-mnist train` command that makes the same run: RECIPE's settings and every other that is not the default."""
    defaults = Config()
    flags = []
    for name, value in config.to_dict().items():
        if value == getattr(defaults, name) and name not in ("epochs", "learning_rate", "batch_size", "lr_schedule",
                                                             "warmup_epochs", "clip_norm", "units", "seed"):
            continue
        if isinstance(value, bool):
            flags.append(f"--{flag(name)}" if value else f"--no-{flag(name)}")
        else:
            flags.append(f"--{flag(name)} {value}")
    return "lstm-mnist train " + " ".join(flags)


def train_or_read(config: Config) -> dict:
    """Train the run (or resume it), or read back its metrics if it finished; returns metrics.json's contents."""
    import keras

    from lstm_mnist.train import train_and_evaluate

    run_dir = Path(config.log_dir) / config.name
    tag = f"[{config.name}]"
    if (run_dir / "config.json").exists():
        if saved_config(run_dir) != config:
            raise SystemExit(f"{Path(sys.argv[0]).name}: {run_dir} holds a run with other settings; "
                             "pass a new --log-dir (or delete that folder)")
        if (run_dir / "metrics.json").exists():
            print(f"{tag} finished earlier: read back {run_dir / 'metrics.json'}")
            return json.loads((run_dir / "metrics.json").read_text())
        print(f"{tag} interrupted earlier: resuming it")
    print(f"{tag} {command_for(config)}")
    keras.backend.clear_session()  # each run builds its model in a fresh Keras session

    def log(line: str) -> None:
        if line.startswith(("epoch ", "test accuracy", "resum")):
            print(f"{tag} {line}", flush=True)

    resume = run_dir if (run_dir / "config.json").exists() else None
    return train_and_evaluate(config, log=log, resume_dir=resume).metrics


def saved_config(run_dir: Path) -> Config:
    """The Config in a run folder's config.json (which also holds the data's fingerprint)."""
    saved = json.loads((run_dir / "config.json").read_text())
    return Config(**{name: value for name, value in saved.items() if name in Config.__dataclass_fields__})


def scalars(folder: Path, tag: str) -> tuple[list[int], list[float]]:
    """The (steps, values) of one scalar tag in one TensorBoard folder of a run; empty if none was written."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not folder.is_dir():
        return [], []
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags()["tensors"]:
        return [], []
    events = accumulator.Tensors(tag)
    return [event.step for event in events], [float(tf.make_ndarray(event.tensor_proto)) for event in events]


def learning_curves(run_dir: Path) -> dict:
    """What the run wrote to TensorBoard: validation accuracy per epoch, training batch accuracy every few steps."""
    epoch_steps, validation = scalars(run_dir / "validation", "epoch/accuracy")
    batch_steps, batch = scalars(run_dir / "train", "step/accuracy")
    return {"epoch_steps": epoch_steps, "val_accuracy": validation, "batch_steps": batch_steps,
            "batch_accuracy": batch}


def gradient_flow(arguments, results: list[dict]) -> dict:
    """mean ||dL/dx_t|| per timestep at --flow-length, each cell freshly built and trained; and LSTM forget gates."""
    import keras

    from lstm_mnist.data import images_to_sequences
    from lstm_mnist.gates import lstm_gate_activations
    from lstm_mnist.gradient_flow import input_row_gradient_norms
    from lstm_mnist.mnist_files import load_mnist
    from lstm_mnist.model import build_model

    length = arguments.flow_length
    mnist = load_mnist(arguments.data, log=lambda line: None)
    count = min(arguments.flow_images, arguments.val_size)
    # The first images of the training file are the validation set (data.split_mnist).
    x = images_to_sequences(mnist.x_train[:count], IMAGE_PIXELS // length)  # (N, T, F)
    labels = mnist.y_train[:count].astype("int32")
    flow = {}
    for result in (r for r in results if r["length"] == length):
        config = run_config(arguments, length, result["cell"])
        keras.backend.clear_session()
        keras.utils.set_random_seed(config.seed)  # as train_and_evaluate does: the weights the run started from
        models = {"fresh": build_model(config),
                  "trained": keras.models.load_model(Path(config.log_dir) / config.name / "model.keras")}
        entry = {}
        for stage, model in models.items():
            entry[stage] = input_row_gradient_norms(model, x, labels).tolist()
            if config.cell == "lstm":
                gates = lstm_gate_activations(model.get_layer("lstm_1"), x[:256])  # each (N, T, H)
                entry[f"forget_gate_{stage}"] = float(gates.forget.mean())
        flow[result["cell"]] = entry
        fresh, trained = entry["fresh"], entry["trained"]
        gates = (f"; mean forget gate {entry['forget_gate_fresh']:.2f} fresh, {entry['forget_gate_trained']:.2f} "
                 "trained" if "forget_gate_fresh" in entry else "")
        print(f"gradient flow, T={length}, {CELLS[result['cell']][0]}: ||dL/dx_0|| / ||dL/dx_{length - 1}|| = "
              f"{fresh[0] / fresh[-1]:.1e} fresh, {trained[0] / trained[-1]:.1e} trained{gates}")
    return flow


def draw_accuracy(arguments, results: list[dict], path: Path) -> None:
    """Test accuracy against T (top), and below it the learning curves at every T."""
    from matplotlib.figure import Figure

    lengths = arguments.lengths
    figure = Figure(figsize=(max(10.0, 2.6 * len(lengths)), 7.6), dpi=110)
    grid = figure.add_gridspec(2, len(lengths), height_ratios=(1.25, 1.0), hspace=0.45, wspace=0.12)
    axes = figure.add_subplot(grid[0, :])
    for cell in arguments.cells:
        label, colour, _ = CELLS[cell]
        rows = sorted((r for r in results if r["cell"] == cell), key=lambda r: r["length"])
        axes.plot([r["length"] for r in rows], [100 * r["test_accuracy"] for r in rows], color=colour, marker="o",
                  label=label)
    # The y-axis starts 10 points below the worst result, so that differences of a point stay visible.
    lowest = max(0, 10 * math.floor(min(100 * r["test_accuracy"] for r in results) / 10) - 10)
    if lowest <= 10:
        axes.axhline(10, color="grey", linestyle=":", linewidth=1)
        axes.text(lengths[-1], 11, "chance: 10%", color="grey", fontsize=8, ha="right")
    axes.set_xscale("log", base=2)
    axes.set_xticks(lengths, [f"{t}\n({IMAGE_PIXELS // t} px/step)" for t in lengths])
    axes.minorticks_off()
    axes.set_ylim(lowest, 100)
    axes.set_xlabel("sequence length T (timesteps per image)", fontsize=9)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"Test accuracy after {arguments.epochs} epochs, same recipe and {arguments.units} units for "
                   "every cell", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    for column, length in enumerate(lengths):
        curves = figure.add_subplot(grid[1, column], sharey=None if column == 0 else figure.axes[1])
        for cell in arguments.cells:
            result = next((r for r in results if r["cell"] == cell and r["length"] == length), None)
            if result is None:
                continue
            colour, per_epoch = CELLS[cell][1], result["steps"] / result["epochs"]
            if result["batch_steps"]:
                smooth = exponential_smoothing(result["batch_accuracy"], 0.8)
                curves.plot([s / per_epoch for s in result["batch_steps"]], [100 * a for a in smooth],
                            color=colour, linewidth=0.8, alpha=0.7)
            curves.plot([s / per_epoch for s in result["epoch_steps"]], [100 * a for a in result["val_accuracy"]],
                        color=colour, marker="o", markersize=3, linestyle="none")
        curves.set_title(f"T = {length}", fontsize=9)
        curves.set_ylim(0, 100)
        curves.set_xlim(0, arguments.epochs)
        curves.set_xlabel("epochs", fontsize=8)
        curves.tick_params(labelsize=7)
        curves.grid(True, alpha=0.3)
        if column == 0:
            curves.set_ylabel("accuracy (%)", fontsize=8)
        else:
            curves.tick_params(labelleft=False)
    figure.text(0.5, 0.015, "learning curves: lines = training batch accuracy (smoothed), dots = validation "
                "accuracy after each epoch", ha="center", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")


def exponential_smoothing(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: each point is weight * the previous smoothed point + (1 - weight) * its value."""
    smoothed, last = [], values[0] if values else 0.0
    for value in values:
        last = weight * last + (1 - weight) * value
        smoothed.append(last)
    return smoothed


def draw_gradient_flow(arguments, flow: dict, path: Path) -> None:
    """Two panels on one log scale: mean ||dL/dx_t|| against t, freshly built | trained, one line per cell."""
    from matplotlib.figure import Figure

    length = arguments.flow_length
    figure = Figure(figsize=(11, 4.4), dpi=110)
    panels = figure.subplots(1, 2, sharey=True)
    for axes, stage, title in ((panels[0], "fresh", "freshly built"),
                               (panels[1], "trained", f"after {arguments.epochs} epochs")):
        for cell, entry in flow.items():
            label, colour, _ = CELLS[cell]
            norms = entry[stage]
            axes.plot(range(length), norms, color=colour, linewidth=1.2,
                      label=f"{label}: t=0 / t={length - 1}: {norms[0] / norms[-1]:.1g}")
        axes.set_yscale("log")
        axes.set_xlim(0, length - 1)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel(f"timestep t of the input ({IMAGE_PIXELS // length} pixels each; the classifier reads h "
                        f"after t = {length - 1})", fontsize=8)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7, loc="lower right")
    panels[0].set_ylabel("mean ||dL/dx_t||  (log scale)")
    figure.suptitle(f"How strongly the input at each timestep reaches the loss, T = {length} "
                    f"({arguments.units} units, mean over {min(arguments.flow_images, arguments.val_size):,} "
                    "validation digits)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def write_summary(arguments, results: list[dict]) -> None:
    """The table as TensorBoard scalars (x-axis: T), in <log-dir>/summary."""
    import tensorflow as tf

    shutil.rmtree(arguments.log_dir / "summary", ignore_errors=True)  # derived from the runs: rewritten each time
    for cell in arguments.cells:
        writer = tf.summary.create_file_writer(str(arguments.log_dir / "summary" / cell))
        with writer.as_default():
            for result in (r for r in results if r["cell"] == cell):
                tf.summary.scalar("why_lstm/test_accuracy", result["test_accuracy"], step=result["length"],
                                  description=f"test accuracy after {arguments.epochs} epochs; x-axis: sequence length T")
                tf.summary.scalar("why_lstm/minutes", result["seconds"] / 60, step=result["length"],
                                  description="wall-clock minutes of the run; x-axis: sequence length T")
        writer.close()


def write_gradient_flow(arguments, flow: dict) -> None:
    """The gradient-flow curves (x-axis: the timestep t), in <log-dir>/gradient_flow."""
    from lstm_mnist import gradient_flow as flow_module

    shutil.rmtree(arguments.log_dir / "gradient_flow", ignore_errors=True)  # derived from the runs: rewritten each time
    flow_module.write_tensorboard(arguments.log_dir / "gradient_flow",
                                  {f"{cell}_{stage}": entry[stage] for cell, entry in flow.items()
                                   for stage in ("fresh", "trained")})


def write_table(arguments, results: list[dict], seconds: float) -> str:
    lines = ["| T | pixels per step | cell | epochs | test accuracy | minutes |", "|---|---|---|---|---|---|"]
    for result in sorted(results, key=lambda r: (r["length"], list(CELLS).index(r["cell"]))):
        lines.append(f"| {result['length']} | {IMAGE_PIXELS // result['length']} | {CELLS[result['cell']][0]} | "
                     f"{result['epochs']} | {result['test_accuracy']:.2%} | {result['seconds'] / 60:.1f} |")
    table = "\n".join(lines)
    (arguments.log_dir / "results.md").write_text(table + f"\n\nthis invocation: {seconds / 60:.1f} minutes\n")
    (arguments.log_dir / "results.json").write_text(json.dumps(results, indent=1))
    return table


def train_every_run(arguments) -> list[dict]:
    """Every cell at every length: trained, resumed or read back; each run's metrics and learning curves.

    Raises OneLineError (Ctrl-C, a full disk, a run folder in use): `stopped` says it in one line.
    """
    import matplotlib  # a core dependency (the IMAGES tab draws with it too)

    matplotlib.use("Agg")  # write files only; no window
    from lstm_mnist.quiet import import_tensorflow_quietly

    import_tensorflow_quietly(for_the_command=True)  # without TensorFlow's start-up lines, as lstm-mnist does
    import tensorflow as tf

    # Each run compiles its own steps; TensorFlow would warn about "retracing" at every run after the fifth.
    tf.get_logger().setLevel("ERROR")
    results = []
    for length in arguments.lengths:
        for cell in arguments.cells:
            config = run_config(arguments, length, cell)
            metrics = train_or_read(config)
            results.append({"length": length, "cell": cell, **metrics,
                            **learning_curves(Path(config.log_dir) / config.name)})
    return results


def stopped(error) -> int:
    """A OneLineError from train_every_run, said in one line (with how to go on, unless the input is at fault)."""
    again = "" if error.exit_code == 2 else "; run the same command again to go on where it stopped"
    print(f"{Path(sys.argv[0]).name}: {error}{again}", file=sys.stderr)
    return error.exit_code


def main(argv=None) -> int:
    arguments = parse_arguments(argv)
    started = time.time()
    from lstm_mnist.errors import OneLineError

    try:
        results = train_every_run(arguments)
    except OneLineError as error:
        return stopped(error)
    flow = gradient_flow(arguments, results)
    draw_accuracy(arguments, results, arguments.output_dir / "why_lstm.png")
    draw_gradient_flow(arguments, flow, arguments.output_dir / "gradient_flow.png")
    write_summary(arguments, results)
    write_gradient_flow(arguments, flow)
    seconds = time.time() - started
    print(write_table(arguments, results, seconds))
    print(f"wrote {arguments.output_dir / 'why_lstm.png'}, {arguments.output_dir / 'gradient_flow.png'}, "
          f"{arguments.log_dir / 'results.md'} in {seconds / 60:.1f} minutes "
          f"(tensorboard --logdir {arguments.log_dir})")
    if max(arguments.lengths) < IMAGE_PIXELS:
        print(f"pixel by pixel (T = {IMAGE_PIXELS}, the papers' sequential MNIST) needs far more training than a "
              "CPU gives in an hour; on a GPU, e.g.:\n"
              f"  python scripts/why_lstm.py --lengths 28 112 392 {IMAGE_PIXELS} --epochs 20 "
              f"--flow-length {IMAGE_PIXELS} --log-dir logs/why_lstm_gpu --output-dir docs/images/gpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
