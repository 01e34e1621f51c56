"""What each run writes to TensorBoard, and under which tags.

Four event-file folders per training run; TensorBoard shows each as a run,
so the same tag in two of them is drawn as two overlaid curves:

    <run_dir>/             HPARAMS   the run's settings and which metrics to compare   once
    <run_dir>/train/       SCALARS   epoch/loss, epoch/accuracy                         once per epoch
                                     step/loss, step/accuracy,                          every log_every_steps
                                     optimizer/learning_rate, optimizer/gradient_norm,
                                     throughput/examples_per_second
                           HISTOGRAMS weights/<path>, weights_by_gate/<path>/<gate>     every summary_every_epochs
                                     gradients/<path>, gradients_by_gate/<path>/<gate>
                           GRAPHS    train_step (the traced op graph), keras (the layers) once
                           IMAGES    inputs/as_timesteps                                once
                           TEXT      run/config, run/model_summary                      once
    <run_dir>/validation/  SCALARS   epoch/loss, epoch/accuracy                         once per epoch
                           HISTOGRAMS gate_activations/<layer>/<gate>                  every summary_every_epochs
                           IMAGES    validation/confusion_matrix, validation/misclassified,
                                     validation/reading_row_by_row                      every summary_every_epochs
    <run_dir>/test/        SCALARS   final/loss, final/accuracy                         once, at the end

The x-axis is always the global training step (the optimizer's iteration
count), so train and validation points line up. What is written once is
written at step 0.

Histogram tags use each variable's Keras path, e.g.
`weights/lstm_1/lstm_cell/recurrent_kernel`. The stock Keras TensorBoard
callback names them by the bare weight name (`kernel`, `bias`), so every
layer's kernel lands under one tag and the histograms collide. An LSTM keeps
its four gates in one fused kernel; `weights_by_gate/.../forget` is the forget
gate's slice of it (see gates.py).

This module knows *how* and *under which tag* to write; dashboard.py decides
*when*.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.histogram import metadata as histogram_metadata

from lstm_mnist.checkpoint import plain_reason
from lstm_mnist.gates import lstm_layers, split_gates, weight_gates

# Metrics the HPARAMS tab shows next to each run's settings: (run folder, tag).
HPARAMS_METRICS = (
    ("test", "final/accuracy"),
    ("test", "final/loss"),
    ("validation", "epoch/accuracy"),
    ("validation", "epoch/loss"),
)
HISTOGRAM_BUCKETS = 30  # what tf.summary.histogram uses


def histogram_buckets(values, bucket_count: int = HISTOGRAM_BUCKETS) -> np.ndarray:
    """TensorBoard's histogram of `values` (any shape): float64 [bucket_count, 3] rows of (left, right, count).

    The same equal-width buckets from min to max that `tf.summary.histogram`
    computes, computed with NumPy. Why not call it: it counts by building a
    float64 one-hot matrix of size (values x 30); for the gate activations
    (four tensors of 229k values) that was over half of all logging time on a
    2-core CPU. tests/test_dashboard.py checks both give the same buckets.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
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


# Settings that say where things are, not how the model is trained.
NOT_HYPERPARAMETERS = ("data", "log_dir", "name", "log_every_steps", "tensorboard", "summary_every_epochs", "profile",
                       "checkpoint_every_steps")


class SummaryWriteError(Exception):
    """An event file could not be written (a full disk, a lost mount). The message is one line for a person."""


class TensorBoardWriter:
    """Owns the event-file writers of one run and knows every tag."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.run = tf.summary.create_file_writer(str(run_dir))  # the HParams session
        self.train = tf.summary.create_file_writer(str(run_dir / "train"))
        self.validation = tf.summary.create_file_writer(str(run_dir / "validation"))
        self.test = tf.summary.create_file_writer(str(run_dir / "test"))

    @contextlib.contextmanager
    def writing(self, writer, step: int):
        """Make `writer` the default at `step`; a failed write (seen when it flushes on exit) becomes one line."""
        try:
            with writer.as_default(step=step):
                yield
        except tf.errors.OpError as error:
            raise SummaryWriteError(
                f"could not write TensorBoard events to {self.run_dir} at step {step} ({plain_reason(error)}); "
                f"make room, then continue with: lstm-mnist train --resume {self.run_dir}") from None

    # --- Scalars -------------------------------------------------------------
    def step(self, step: int, loss: float, accuracy: float, learning_rate: float, gradient_norm: float,
             examples_per_second: float | None = None) -> None:
        """Scalars of one training batch (noisy; TensorBoard's smoothing slider helps)."""
        with self.writing(self.train, step):
            tf.summary.scalar("step/loss", loss)
            tf.summary.scalar("step/accuracy", accuracy)
            tf.summary.scalar("optimizer/learning_rate", learning_rate)
            tf.summary.scalar("optimizer/gradient_norm", gradient_norm, description="global L2 norm before clipping")
            if examples_per_second is not None:
                tf.summary.scalar("throughput/examples_per_second", examples_per_second,
                                  description="training images per second since the previous point")

    def epoch(self, step: int, train: dict, validation: dict) -> None:
        """Epoch means of loss and accuracy, under the same tags in both runs so they overlay."""
        for writer, metrics in ((self.train, train), (self.validation, validation)):
            with self.writing(writer, step):
                tf.summary.scalar("epoch/loss", metrics["loss"])
                tf.summary.scalar("epoch/accuracy", metrics["accuracy"])

    def final(self, step: int, test: dict) -> None:
        with self.writing(self.test, step):
            tf.summary.scalar("final/loss", test["loss"])
            tf.summary.scalar("final/accuracy", test["accuracy"])

    # --- Histograms ----------------------------------------------------------
    def weights(self, step: int, model: keras.Model) -> None:
        """One histogram per weight tensor, tagged by its unique Keras path, and one per LSTM gate."""
        with self.writing(self.train, step):
            for variable in model.weights:
                histogram(f"weights/{variable.path}", variable)
            for layer in lstm_layers(model):
                for path, gates in weight_gates(layer).items():
                    for gate, block in gates.items():
                        histogram(f"weights_by_gate/{path}/{gate}", block)

    def gradients(self, step: int, model: keras.Model, gradients: list) -> None:
        """Histograms of one batch's gradients, one per trainable weight (and per LSTM gate).

        gradients: one tensor per `model.trainable_variables`, same shapes.
        """
        with self.writing(self.train, step):
            by_path = {}
            for variable, gradient in zip(model.trainable_variables, gradients, strict=True):
                histogram(f"gradients/{variable.path}", gradient)
                by_path[variable.path] = np.asarray(gradient)
            for layer in lstm_layers(model):
                for path in weight_gates(layer):
                    if path in by_path:
                        for gate, block in split_gates(by_path[path]).items():
                            histogram(f"gradients_by_gate/{path}/{gate}", block)

    def gate_activations(self, step: int, activations: dict) -> None:
        """activations: {layer name: {gate: float [B, T, H]}} from gates.model_gate_activations."""
        with self.writing(self.validation, step):
            for layer_name, gates in activations.items():
                for gate, values in gates.items():
                    histogram(f"gate_activations/{layer_name}/{gate}", values,
                              description=f"{gate} gate values on a fixed validation batch, every unit and every row")

    # --- Images --------------------------------------------------------------
    def image(self, run: str, step: int, tag: str, pixels: np.ndarray, description: str) -> None:
        """One RGB picture, uint8 [height, width, 3], into the `run` folder ("train" or "validation")."""
        with self.writing(getattr(self, run), step):
            tf.summary.image(tag, pixels[np.newaxis], description=description)  # (H, W, 3) -> (1, H, W, 3)

    # --- Once per run: text, graphs, hyperparameters ---------------------------
    def text(self, config_dict: dict, model_summary: str) -> None:
        """The resolved settings as a Markdown table, and Keras's model summary as preformatted text."""
        rows = "\n".join(f"| `{name}` | `{value!r}` |" for name, value in config_dict.items())
        # Four leading spaces make a Markdown code block, which keeps the summary's table aligned.
        summary_block = "\n".join("    " + line for line in model_summary.splitlines())
        with self.writing(self.train, 0):
            tf.summary.text("run/config", f"| setting | value |\n|---|---|\n{rows}")
            tf.summary.text("run/model_summary", summary_block)

    def keras_graph(self, model: keras.Model) -> bool:
        """The model's layers as a conceptual graph (GRAPHS tab, tag `keras`). False if it cannot be had.

        This is what Keras's own TensorBoard callback writes (its
        `keras_model_summary`, which Keras 3 keeps private): the model's JSON
        config under the `graph_keras_model` plugin, which TensorBoard draws as
        one box per layer.
        """
        try:
            model_json = model.to_json()
        except Exception:  # a model with custom, unserializable layers: skip the picture, keep training
            return False
        metadata = tf.compat.v1.SummaryMetadata()
        metadata.plugin_data.plugin_name = "graph_keras_model"
        metadata.plugin_data.content = b"1"  # the plugin's format version
        with self.writing(self.train, 0):
            return bool(tf.summary.write("keras", model_json, step=0, metadata=metadata))

    def start_graph_trace(self) -> None:
        """Record the op graph of the next tf.function call (end with `export_graph_trace`)."""
        tf.summary.trace_on(graph=True, profiler=False)

    def export_graph_trace(self) -> None:
        """Write the graph recorded since `start_graph_trace` as tag `train_step`, at step 0."""
        with self.writing(self.train, 0):
            tf.summary.trace_export("train_step", step=0)

    def hparams(self, config_dict: dict, trial_id: str) -> None:
        """The run's hyperparameters, and which of its metrics the HPARAMS tab should show.

        Every run writes the same experiment description (same settings, same
        metrics), so runs with different cells, units or learning rates line
        up as rows of one table.
        """
        values = {name: value for name, value in config_dict.items() if name not in NOT_HYPERPARAMETERS}
        metrics = [hparams_api.Metric(tag, group=group, display_name=f"{group} {tag.split('/')[-1]}")
                   for group, tag in HPARAMS_METRICS]
        with self.writing(self.run, 0):
            hparams_api.hparams_config(hparams=[hparams_api.HParam(name) for name in values], metrics=metrics)
            hparams_api.hparams(values, trial_id=trial_id)

    # --- Housekeeping ---------------------------------------------------------
    def flush(self) -> None:
        for writer in (self.run, self.train, self.validation, self.test):
            with self.writing(writer, step=0):  # as_default() flushes on exit
                pass

    def close(self, quiet: bool = False) -> None:
        """Flush and close every writer. quiet: ignore write errors (another error is already on its way)."""
        for writer in (self.run, self.train, self.validation, self.test):
            try:
                writer.close()
            except tf.errors.OpError as error:
                if not quiet:
                    raise SummaryWriteError(f"could not write TensorBoard events to {self.run_dir} "
                                            f"({plain_reason(error)})") from None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        self.close(quiet=exc_type is not None)
        return False
