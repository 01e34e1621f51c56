#!/usr/bin/env python
"""Draw how strongly each of the 28 input rows reaches the loss, for a SimpleRNN and an LSTM.

    python scripts/gradient_flow.py            # about a minute on 2 CPU cores

For each cell type the script builds the package's classifier
(`build_model`), measures mean ||dL/dx_t|| for every row t on validation
images, trains it for `--train-steps` steps with the package's own training
step, and measures again. It writes the picture (default
docs/images/gradient_flow.png, shown in the README) and the same curves to
TensorBoard (`tensorboard --logdir logs/gradient_flow`, tag
`gradient_flow/input_row_gradient_norm`, whose x-axis is the row).
The explanation is in lstm_mnist/gradient_flow.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Let the script run from a checkout that was not pip-installed.
sys.path.insert(0, str(ROOT))


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-steps", type=int, default=300,
                        help="training steps (batches of 128) between the two measurements (default 300)")
    parser.add_argument("--units", type=int, default=128, help="hidden units of both models (default 128)")
    parser.add_argument("--images", type=int, default=1000,
                        help="validation images the gradient is averaged over (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the batch order (default 0)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "images" / "gradient_flow.png",
                        help="where to write the PNG")
    parser.add_argument("--log-dir", type=Path, default=Path("logs") / "gradient_flow",
                        help="where to write the TensorBoard curves (an existing folder is refused)")
    arguments = parser.parse_args(argv)
    if arguments.train_steps < 0 or arguments.units <= 0 or arguments.images <= 0:
        parser.error("--train-steps must be 0 or more, --units and --images positive")
    if arguments.log_dir.exists():
        parser.error(f"--log-dir {arguments.log_dir} already exists; pass a new folder")
    return arguments


def mean_forget_gate(model, x) -> float:
    """The LSTM's forget gate f_t, averaged over images, rows and units: how much of c it keeps per row."""
    from lstm_mnist.lstm_cell import lstm_forward

    cell = model.get_layer("lstm_1").cell
    _, _, gates = lstm_forward(x, cell.kernel, cell.recurrent_kernel, cell.bias)  # each (N, T, H)
    return float(gates.forget.mean())


def main(argv=None) -> int:
    arguments = parse_arguments(argv)
    import matplotlib  # a core dependency (the IMAGES tab draws with it too)

    matplotlib.use("Agg")  # write files only; no window
    import keras
    from matplotlib import pyplot as plt

    from lstm_mnist.config import TIMESTEPS, Config
    from lstm_mnist.data import load_mnist, make_dataset, split_mnist
    from lstm_mnist.gradient_flow import input_row_gradient_norms, write_tensorboard
    from lstm_mnist.model import build_model
    from lstm_mnist.train import make_train_step

    splits = split_mnist(load_mnist(), val_size=5_000)
    x, labels = splits.x_val[:arguments.images], splits.y_val[:arguments.images]  # (N, T, F), (N,)
    curves = {}  # run name -> mean ||dL/dx_t|| for t = 0..T-1
    for cell, label in (("simple_rnn", "SimpleRNN"), ("lstm", "LSTM")):
        keras.utils.set_random_seed(arguments.seed)
        config = Config(cell=cell, units=arguments.units)
        model = build_model(config)
        curves[f"{cell}_fresh"] = input_row_gradient_norms(model, x, labels)
        forget_gates = [mean_forget_gate(model, x)] if cell == "lstm" else []
        optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        train_step = make_train_step(model, optimizer, clip_norm=config.clip_norm)
        batches = make_dataset(splits.x_train, splits.y_train, config.batch_size,
                               shuffle_seed=(arguments.seed, 1)).take(arguments.train_steps)
        for batch_x, batch_y in batches:
            loss, accuracy, _ = train_step(batch_x, batch_y)  # the gradient norm is not needed here
        curves[f"{cell}_trained"] = input_row_gradient_norms(model, x, labels)
        if forget_gates:
            forget_gates.append(mean_forget_gate(model, x))
        if arguments.train_steps:
            print(f"{label}: after {arguments.train_steps} steps, last batch loss {float(loss):.3f} "
                  f"accuracy {float(accuracy):.3f}")
        fresh, trained = curves[f"{cell}_fresh"], curves[f"{cell}_trained"]
        print(f"{label}: ||dL/dx_0|| / ||dL/dx_{TIMESTEPS - 1}|| = {fresh[0] / fresh[-1]:.1e} fresh, "
              f"{trained[0] / trained[-1]:.1e} trained")
        if forget_gates:
            print(f"{label}: mean forget gate {forget_gates[0]:.2f} fresh, {forget_gates[1]:.2f} trained")

    # Two panels, the same log scale: before training | after training; red = SimpleRNN, blue = LSTM.
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.4), dpi=120, sharey=True)
    rows = range(TIMESTEPS)
    for axis, stage, title in ((axes[0], "fresh", "freshly built"),
                               (axes[1], "trained", f"after {arguments.train_steps} training steps")):
        for cell, label, color in (("simple_rnn", "SimpleRNN", "tab:red"), ("lstm", "LSTM", "tab:blue")):
            norms = curves[f"{cell}_{stage}"]
            axis.plot(rows, norms, color=color, marker="o", markersize=3,
                      label=f"{label}: row 0 / row {TIMESTEPS - 1} = {norms[0] / norms[-1]:.2g}")
        axis.set_yscale("log")
        axis.set_xlim(-0.5, TIMESTEPS - 0.5)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel(f"input row t (0 = top; the classifier reads h after row {TIMESTEPS - 1})", fontsize=9)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("mean ||dL/dx_t||  (log scale)")
    figure.suptitle(f"How strongly each input row reaches the loss ({arguments.units} units, "
                    f"mean over {len(x):,} validation digits)", fontsize=11)
    figure.tight_layout()
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(arguments.output)
    write_tensorboard(arguments.log_dir, curves)
    print(f"wrote {arguments.output} and {arguments.log_dir} (tensorboard --logdir {arguments.log_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
