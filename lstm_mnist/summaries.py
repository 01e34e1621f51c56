"""What each run writes to TensorBoard, and under which tags (dashboard.py decides when).

Four event-file folders per training run; TensorBoard shows each as a run,
so the same tag in two of them is drawn as two overlaid curves:

    <run_dir>/             HPARAMS   the run's settings and which metrics to compare   once
    <run_dir>/train/       SCALARS   epoch/loss, epoch/accuracy                         once per epoch
                                     step/loss, step/accuracy,                          every log_every_steps
                                     optimizer/learning_rate, optimizer/gradient_norm,
                                     throughput/examples_per_second
                           HISTOGRAMS weights/<path>, weights_by_gate/<path>/<gate>     every summary_every_epochs
                                     gradients/<path>, gradients_by_gate/<path>/<gate>
                           GRAPHS    function/train_step (the traced op graph of the   once
                                     first compiled call: ten steps in a loop),
                                     keras (the layers: "Conceptual graph")
                           IMAGES    inputs/as_timesteps                                once
                           TEXT      run/config, run/model_summary                      once
    <run_dir>/validation/  SCALARS   epoch/loss, epoch/accuracy                         once per epoch
                           HISTOGRAMS gate_activations/<layer>/<gate>                  every summary_every_epochs
                           IMAGES    validation/confusion_matrix, validation/misclassified,
                                     validation/reading_row_by_row                      every summary_every_epochs
    <run_dir>/test/        SCALARS   final/loss, final/accuracy                         once, at the end
                           TEXT      final/result (the test numbers in a sentence)

The x-axis is always the global training step (the optimizer's iteration
count), so train and validation points line up. What is written once is
written at step 0. A folder is created when something is first written to
it: a run without a validation set (--val-size 0) has no validation folder.

Histogram tags use each variable's Keras path, e.g.
`weights/lstm_1/lstm_cell/recurrent_kernel`. The stock Keras TensorBoard
callback names them by the bare weight name (`kernel`, `bias`), so every
layer's kernel lands under one tag and the histograms collide. An LSTM keeps
its four gates in one fused kernel; `weights_by_gate/.../forget` is the forget
gate's slice of it, and <gate> is one of lstm_cell.Gates: input, forget,
candidate, output (see gates.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.histogram import metadata as histogram_metadata

from lstm_mnist.config import Config
from lstm_mnist.config_checks import INTEGER_RANGES
from lstm_mnist.errors import OneLineError, plain_reason
from lstm_mnist.gates import Gates, fused_weights, lstm_layers, split_gates
from lstm_mnist.run import resume_command

# Metrics the HPARAMS tab shows next to each run's settings, in this order: (run folder, tag).
HPARAMS_METRICS = (
    ("test", "final/accuracy"),
    ("validation", "epoch/accuracy"),
    ("test", "final/loss"),
    ("validation", "epoch/loss"),
)
# The settings a learner varies first, in the order of the HPARAMS columns; every other
# hyperparameter follows, in the order of config.py.
HPARAMS_FIRST = ("cell", "units", "layers", "epochs", "learning_rate", "train_examples", "bidirectional", "dropout",
                 "batch_size", "lr_schedule")
# Settings that say where things are, not how the model is trained.
NOT_HYPERPARAMETERS = ("data", "log_dir", "name", "log_every_steps", "tensorboard", "summary_every_epochs", "profile",
                       "checkpoint_every_steps", "devices")
# The traced training step's tag in GRAPHS. The graph page opens the first tag in sorted order as an op graph,
# so this must sort before Keras's `keras` tag, which holds no op graph (opened as one, it fails: "Malformed GraphDef").
TRAIN_STEP_GRAPH = "function/train_step"
HISTOGRAM_BUCKETS = 30  # what tf.summary.histogram uses


class SummaryWriteError(OneLineError):
    """An event file could not be written or trimmed (a full disk, a lost mount, a planted symlink)."""


def histogram_buckets(values, bucket_count: int = HISTOGRAM_BUCKETS) -> np.ndarray:
    """TensorBoard's histogram of `values` (any shape): float64 [bucket_count, 3] rows of (left, right, count).

    The same equal-width buckets from min to max as `tf.summary.histogram`
    (tests/test_dashboard.py checks it against TensorBoard's own `_buckets`).
    """
    # Why not tf.summary.histogram: `python scripts/benchmark_histograms.py` (2 shared CPU cores) measured it 14-17x
    # as slow on the 34 weight and gradient histograms (~25 eager ops per call) and 2-7x on the gate activations
    # (a values x 30 one-hot matrix): 0.15-0.3 s more per epoch, up to the whole 3% that logging may cost.
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]  # a --mixed-precision step that overflowed hands back inf gradients: left out
    if data.size == 0:
        return np.zeros((bucket_count, 3))
    low, high = data.min(), data.max()
    if low == high:  # one distinct value: TensorBoard puts all of it in the last bucket
        counts = np.zeros(bucket_count)
        counts[-1] = data.size
        return np.stack([np.full(bucket_count, high), np.full(bucket_count, high), counts], axis=1)
    width = (high - low) / bucket_count
    index = np.minimum(np.floor((data - low) / width).astype(np.int64), bucket_count - 1)  # (N,) in 0..29
    counts = np.bincount(index, minlength=bucket_count).astype(np.float64)
    edges = np.linspace(low, high, bucket_count + 1)
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], counts], axis=1)  # (buckets, 3)


def histogram(tag: str, values, description: str = "") -> None:
    """Write one histogram to the default writer at its step, as tf.summary.histogram would."""
    metadata = histogram_metadata.create_summary_metadata(display_name=None, description=description)
    tf.summary.write(tag, tf.constant(histogram_buckets(values)), metadata=metadata)


def gate_histograms(prefix: str, gates: Gates, description: str = "") -> None:
    """One histogram per gate: `<prefix>/input`, `<prefix>/forget`, `<prefix>/candidate`, `<prefix>/output`."""
    for gate, values in gates._asdict().items():
        histogram(f"{prefix}/{gate}", values, description)


def hparam_columns(config_dict: dict) -> list:
    """The HPARAMS tab's settings, HPARAMS_FIRST first: hparams_api.HParam, each shown under its setting's name.

    TensorBoard (2.21) ignores the order given to `hparams_config`: it sorts the
    settings by their internal name and ticks only the first five as columns.
    So the internal name carries the rank ("01 cell", "02 units", ...) and the
    display name, which is all the tab shows, is the setting's own name.
    """
    fields = {field.name: field for field in dataclasses.fields(Config)}
    names = [name for name in config_dict if name not in NOT_HYPERPARAMETERS]
    names = [name for name in HPARAMS_FIRST if name in names] + [name for name in names if name not in HPARAMS_FIRST]
    columns = []
    for rank, name in enumerate(names, start=1):
        columns.append(hparams_api.HParam(f"{rank:02d} {name}", hparam_domain(name, fields[name]), display_name=name,
                                          description=fields[name].metadata["help"]))
    return columns


def hparam_domain(name: str, field: dataclasses.Field):
    """The values a setting may take, as the HPARAMS tab's filter in its left pane offers them.

    A checkbox per value for a choice or a switch; a min/max box for a number. Without a domain the
    tab knows no type for the setting, offers no filter and warns in the browser's console.
    """
    if field.metadata.get("choices"):
        return hparams_api.Discrete(list(field.metadata["choices"]))
    if isinstance(field.default, bool):
        return hparams_api.Discrete([False, True])
    if isinstance(field.default, int):
        return hparams_api.IntInterval(*INTEGER_RANGES.get(name, (0, 2**31 - 1)))  # the bounds each --flag is held to
    if isinstance(field.default, float):  # every float setting is 0 or more (config_checks.py)
        return hparams_api.RealInterval(0.0, sys.float_info.max)
    raise TypeError(f"{name}: a {type(field.default).__name__} setting has no HPARAMS domain; add one here")


class TensorBoardWriter:
    """Owns the event-file writers of one run and knows every tag."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.writers = {}  # folder ("" for the run folder, "train", "validation", "test") -> tf.summary writer

    @contextlib.contextmanager
    def one_line_errors(self, step: int | None = None):
        """Turn a failed write (a full disk, a lost mount) into SummaryWriteError, one line for a person."""
        try:
            yield
        except tf.errors.OpError as error:
            where = "" if step is None else f" at step {step}"
            raise SummaryWriteError(
                f"could not write TensorBoard events to {self.run_dir}{where} ({plain_reason(error)}); "
                f"make room, then continue with: {resume_command(self.run_dir)}"
            ) from None

    @contextlib.contextmanager
    def writing(self, folder: str, step: int):
        """Make `folder`'s writer (created on first use) the default at `step`; it flushes on exit."""
        with self.one_line_errors(step):
            if folder not in self.writers:
                self.writers[folder] = tf.summary.create_file_writer(str(self.run_dir / folder))
            with self.writers[folder].as_default(step=step):
                yield

    # --- Scalars -------------------------------------------------------------
    def step(self, step: int, loss: float, accuracy: float, learning_rate: float, gradient_norm: float,
             examples_per_second: float | None = None) -> None:
        """Scalars of one training batch (noisy; TensorBoard's smoothing slider helps)."""
        with self.writing("train", step):
            tf.summary.scalar("step/loss", loss)
            tf.summary.scalar("step/accuracy", accuracy)
            tf.summary.scalar("optimizer/learning_rate", learning_rate, description="the rate Adam applied at this step")
            tf.summary.scalar("optimizer/gradient_norm", gradient_norm, description="global L2 norm before clipping")
            if examples_per_second is not None:
                tf.summary.scalar("throughput/examples_per_second", examples_per_second,
                                  description="training images per second since the previous point; a run's "
                                              "first point and the one at the end of its first epoch sit low: "
                                              "they include compiling the step, for the batches of 128 and "
                                              "for the epoch's smaller last batch (seconds each)")

    def epoch(self, step: int, train: dict, validation: dict | None) -> None:
        """Epoch means of loss and accuracy, under the same tags in both runs so they overlay."""
        for folder, metrics in (("train", train), ("validation", validation)):
            if metrics is not None:
                with self.writing(folder, step):
                    tf.summary.scalar("epoch/loss", metrics["loss"])
                    tf.summary.scalar("epoch/accuracy", metrics["accuracy"])

    def final(self, step: int, test: dict, sentence: str) -> None:
        """The test numbers: two scalars, and the same in a sentence (TEXT), where one run cannot hide another."""
        with self.writing("test", step):
            tf.summary.scalar("final/loss", test["loss"])
            tf.summary.scalar("final/accuracy", test["accuracy"])
            tf.summary.text("final/result", sentence)

    # --- Histograms ----------------------------------------------------------
    def weights(self, step: int, model: keras.Model) -> None:
        """One histogram per weight tensor, tagged by its unique Keras path, and one per LSTM gate."""
        self.fused_histograms(step, "weights", model, {variable.path: variable for variable in model.weights},
                              "the weights after this step; at step 0, as initialised, before any training step")

    def gradients(self, step: int, model: keras.Model, gradients: list, description: str) -> None:
        """The same for a step's gradients, one per trainable weight in order: one per weight, one per LSTM gate."""
        paths = [variable.path for variable in model.trainable_variables]
        self.fused_histograms(step, "gradients", model, dict(zip(paths, map(np.asarray, gradients))), description)

    def fused_histograms(self, step: int, kind: str, model: keras.Model, arrays: dict, description: str = "") -> None:
        """arrays: {variable path: values}. Tags `<kind>/<path>`, and `<kind>_by_gate/<path>/<gate>` for an LSTM's."""
        with self.writing("train", step):
            for path, values in arrays.items():
                histogram(f"{kind}/{path}", values, description)
            for layer in lstm_layers(model):
                for variable in fused_weights(layer):
                    if variable.path in arrays:
                        gate_histograms(f"{kind}_by_gate/{variable.path}", split_gates(arrays[variable.path]),
                                        description)

    def gate_activations(self, step: int, activations: dict[str, Gates], description: str) -> None:
        """activations: {layer name: Gates, each float [B, T, H]} from gates.model_gate_activations."""
        with self.writing("validation", step):
            for layer_name, gates in activations.items():
                gate_histograms(f"gate_activations/{layer_name}", gates, description)

    # --- Images --------------------------------------------------------------
    def image(self, folder: str, step: int, tag: str, pixels: np.ndarray, description: str) -> None:
        """One RGB picture, uint8 [height, width, 3], into `folder` ("train" or "validation")."""
        with self.writing(folder, step):
            tf.summary.image(tag, pixels[np.newaxis], description=description)  # (H, W, 3) -> (1, H, W, 3)

    # --- Once per run: text, graphs, hyperparameters ---------------------------
    def text(self, config_dict: dict, model_summary: str) -> None:
        """The resolved settings as a Markdown table, and Keras's model summary as preformatted text."""
        rows = "\n".join(f"| `{name}` | `{value!r}` |" for name, value in config_dict.items())
        # Four leading spaces make a Markdown code block, which keeps the summary's table aligned.
        summary_block = "\n".join("    " + line for line in model_summary.splitlines())
        with self.writing("train", 0):
            tf.summary.text("run/config", f"| setting | value |\n|---|---|\n{rows}")
            tf.summary.text("run/model_summary", summary_block)

    def keras_graph(self, model: keras.Model) -> None:
        """The model's layers as a conceptual graph (GRAPHS tab, tag `keras`), written by Keras itself.

        Keras's own TensorBoard callback writes it when given the model: the
        model's JSON config, which TensorBoard draws as one box per layer. The
        callback uses a writer of its own, hence a second event file in train/.
        """
        callback = keras.callbacks.TensorBoard(log_dir=str(self.run_dir), write_graph=True)
        with self.one_line_errors(0):
            callback.set_model(model)  # writes <run_dir>/train, tag `keras`, step 0
            callback.on_train_end()  # closes the callback's writer

    def start_graph_trace(self) -> None:
        """Record the op graph of the next tf.function call (end with `export_graph_trace`)."""
        tf.summary.trace_on(graph=True, profiler=False)

    def export_graph_trace(self) -> None:
        """Write the graph recorded since `start_graph_trace` as tag TRAIN_STEP_GRAPH, at step 0."""
        with self.writing("train", 0):
            tf.summary.trace_export(TRAIN_STEP_GRAPH, step=0)

    def hparams(self, config_dict: dict, trial_id: str) -> None:
        """The run's hyperparameters, and which of its metrics the HPARAMS tab should show.

        Every run writes the same experiment description (same settings, same
        metrics), so runs with different cells, units or learning rates line
        up as rows of one table.
        """
        hparams = hparam_columns(config_dict)
        metrics = [hparams_api.Metric(tag, group=group, display_name=f"{group} {tag.split('/')[-1]}")
                   for group, tag in HPARAMS_METRICS]
        with self.writing("", 0):
            hparams_api.hparams_config(hparams=hparams, metrics=metrics)
            hparams_api.hparams({hparam: config_dict[hparam.display_name] for hparam in hparams}, trial_id=trial_id)

    # --- Housekeeping ---------------------------------------------------------
    def flush(self) -> None:
        with self.one_line_errors():
            for writer in self.writers.values():
                writer.flush()

    def close(self, quiet: bool = False) -> None:
        """Flush and close every writer. quiet: ignore write errors (another error is already on its way)."""
        for writer in self.writers.values():
            try:
                with self.one_line_errors():
                    writer.close()
            except SummaryWriteError:
                if not quiet:
                    raise
