#!/usr/bin/env python
"""What the gates of a trained LSTM do, row by row, on validation digits.

    python scripts/gates_by_row.py logs/<run>               # the README's numbers: 1,000 digits, half a minute
    python scripts/gates_by_row.py logs/<run> --digits 16   # a quick look (the tests run this)

It loads the run folder's model.keras, takes the first --digits validation
digits (the split is rebuilt from the run's config.json: its --data and
--val-size), and replays the LSTM that reads the pixel rows with
`lstm_cell.lstm_forward` and the trained weights, so every gate activation
of every unit at every row is in hand. For each row t it prints, over all
digits and units:

    ink        the share of digits with any ink in row t
    input      mean input gate i_t, and the share of i_t above 0.9 (wide open)
    written    mean |i_t * g_t|: how much the row adds to the cell state, eq. (5)
    forget     mean forget gate f_t, and the shares below 0.5 (erasing most of
               what the unit held) and above 0.9 (keeping nearly all of it)
    output     mean output gate o_t
    |c|        mean |c_t|, the size of the memory after row t

and then, for the rows where some digits have ink and others none, the same
row with and without ink side by side. The README's "An LSTM in five
minutes" quotes these numbers; the equations are in lstm_mnist/lstm_cell.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Let the script run from a checkout that was not pip-installed.
sys.path.insert(0, str(ROOT))

WIDE_OPEN, ERASING, KEEPING = 0.9, 0.5, 0.9  # the thresholds the columns count against
MIXED = 0.1  # a row is "mixed" when at least this share of digits has ink there and this share has none


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder (it holds model.keras and config.json)")
    parser.add_argument("--digits", type=int, default=1000,
                        help="validation digits to average over, the first N of the split (default 1000)")
    arguments = parser.parse_args(argv)
    if arguments.digits <= 0:
        parser.error(f"--digits must be a positive integer, got {arguments.digits}")
    for name in ("model.keras", "config.json"):
        if not (arguments.run_dir / name).is_file():
            parser.error(f"{arguments.run_dir} has no {name}; pass the folder of a finished run")
    return arguments, parser


def pixel_row_lstm(model):
    """The LSTM layer that reads the model's input, the pixel rows, or None (e.g. after --input-projection)."""
    import keras

    from lstm_mnist.lstm_cell import ScratchLSTMCell

    for layer in model.layers:
        if isinstance(getattr(layer, "cell", None), (keras.layers.LSTMCell, ScratchLSTMCell)) \
                and not layer.go_backwards and layer.input is model.inputs[0]:
            return layer
    return None


def row_statistics(x, c_seq, gates) -> dict:
    """Per-row statistics of one LSTM's states and gates; each value is an array of T numbers.

    x (N, T, F) the pixel rows; c_seq (N, T, H) and gates (each (N, T, H)) from lstm_forward.
    """
    import numpy as np

    over = (0, 2)  # average over digits and units, keep the rows: (N, T, H) -> (T,)
    return {
        "ink": np.mean(x.max(axis=2) > 0, axis=0),  # (N, T) -> (T,)
        "input": gates.input.mean(axis=over),
        "input>0.9": np.mean(gates.input > WIDE_OPEN, axis=over),
        "written": np.abs(gates.input * gates.candidate).mean(axis=over),
        "forget": gates.forget.mean(axis=over),
        "forget<0.5": np.mean(gates.forget < ERASING, axis=over),
        "forget>0.9": np.mean(gates.forget > KEEPING, axis=over),
        "output": gates.output.mean(axis=over),
        "|c|": np.abs(c_seq).mean(axis=over),
    }


def main(argv=None) -> int:
    arguments, parser = parse_arguments(argv)
    import keras
    import numpy as np

    from lstm_mnist.data import split_mnist
    from lstm_mnist.lstm_cell import lstm_forward
    from lstm_mnist.mnist_files import load_mnist

    try:
        model = keras.models.load_model(arguments.run_dir / "model.keras")
    except Exception as error:  # a truncated or foreign file: say so in one line
        parser.error(f"cannot load {arguments.run_dir / 'model.keras'}: {str(error).splitlines()[0]}")
    layer = pixel_row_lstm(model)
    if layer is None:
        parser.error("the model has no LSTM reading the pixel rows directly; this script needs a run of "
                     "--cell lstm or --cell scratch without --input-projection")
    run_config = json.loads((arguments.run_dir / "config.json").read_text())
    mnist = load_mnist(run_config.get("data", ""), log=lambda line: None)
    x = split_mnist(mnist, run_config.get("val_size", 5_000)).x_val[:arguments.digits]  # (N, T, F)
    if len(x) == 0:
        parser.error("the run has no validation digits (--val-size 0)")

    cell = layer.cell
    _, c_seq, gates = lstm_forward(x, cell.kernel, cell.recurrent_kernel, cell.bias,
                                   peepholes=getattr(cell, "peephole_weights", None),
                                   projection=getattr(cell, "projection_weights", None))  # each (N, T, H)
    stats = row_statistics(x, c_seq, gates)
    print(f"{arguments.run_dir}: {layer.name} ({cell.units} units) on the first {len(x):,} validation digits")
    print("mean over digits and units; % of all gate values; written = |i_t * g_t|\n")
    print("row    ink   input  >0.9  written  forget  <0.5   >0.9  output    |c|")
    for t in range(x.shape[1]):
        print(f"{t:3d}  {stats['ink'][t]:4.0%}   {stats['input'][t]:.3f}  {stats['input>0.9'][t]:4.1%}"
              f"    {stats['written'][t]:.3f}   {stats['forget'][t]:.3f} {stats['forget<0.5'][t]:5.1%}"
              f"  {stats['forget>0.9'][t]:5.1%}   {stats['output'][t]:.3f}  {stats['|c|'][t]:.3f}")

    # The same row with and without ink: what the ink itself changes, the row's position held fixed.
    has_ink = x.max(axis=2) > 0  # (N, T)
    mixed = [t for t in range(x.shape[1]) if MIXED <= has_ink[:, t].mean() <= 1 - MIXED]
    print("\nrows that some digits have ink in and some not: with ink / without")
    print("row   digits     written        forget     forget<0.5")
    for t in mixed:
        ink, blank = has_ink[:, t], ~has_ink[:, t]
        written = np.abs(gates.input[:, t] * gates.candidate[:, t])  # (N, H)
        forget = gates.forget[:, t]  # (N, H)
        print(f"{t:3d}  {ink.sum():4d}/{blank.sum():<4d}  {written[ink].mean():.3f}/{written[blank].mean():.3f}"
              f"  {forget[ink].mean():.3f}/{forget[blank].mean():.3f}"
              f"  {np.mean(forget[ink] < ERASING):5.1%}/{np.mean(forget[blank] < ERASING):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
