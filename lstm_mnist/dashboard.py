"""When each TensorBoard summary is written during training (summaries.py says how and where).

The training loop calls four hooks, and this module decides what each writes:

    start_of_run()      once, at step 0 of a new run: TEXT (config, model summary),
                        HPARAMS, the Keras layer graph, the sample-inputs picture
    before_step(step)   the first step of a new run is traced for the GRAPHS tab;
                        with --profile, a few steps are profiled
    after_step(...)     every log_every_steps steps: step scalars and throughput
    end_of_epoch(...)   every epoch: loss and accuracy; every summary_every_epochs
                        epochs and after the last: the histograms and pictures

Cheap things (scalars) are written often; expensive things (histograms of
every weight and gradient, gate activations, matplotlib pictures) once per
epoch by default, which costs a few percent of the training time
(scripts/benchmark_logging.py measures it). `--no-tensorboard` swaps in
`NoDashboard`, whose hooks do nothing.

A resumed run never writes anything twice at the same step: the once-per-run
summaries are written only when a run starts fresh (they sit at step 0, before
any checkpoint, so a resume keeps them), and everything else is written at
the step it describes, after which resume.discard_events_after removes what
a crash left past the checkpoint.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from lstm_mnist.config import Config
from lstm_mnist.figures import (
    confusion_matrix,
    confusion_matrix_figure,
    misclassified_figure,
    reading_row_by_row_figure,
    sample_inputs_figure,
)
from lstm_mnist.gates import model_gate_activations
from lstm_mnist.reading import can_read_row_by_row, probabilities_after_each_row, settled_row
from lstm_mnist.summaries import TensorBoardWriter

SAMPLE_INPUTS = 8  # validation digits shown as sequences of rows
GATE_BATCH = 128  # validation digits whose gate activations are histogrammed
MISCLASSIFIED = 16  # wrongly classified validation digits shown per epoch
READING_DIGITS = (1, 3, 4, 5, 7, 9)  # one validation image of each is read row by row
PROFILE_STEPS = (5, 10)  # profile steps 5..9 of the run: after the first steps' tracing and warm-up


def timed(hook):
    """Add the wall time spent in a hook to `seconds_writing`: what this run's logging cost, measured directly."""
    @functools.wraps(hook)
    def counted(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self.seconds_writing += time.perf_counter() - started

    return counted


class Dashboard:
    """Writes every TensorBoard summary of one run, at the right moments."""

    def __init__(self, run_dir: Path, config: Config, model: keras.Model, x_val: np.ndarray, y_val: np.ndarray,
                 log: Callable[[str], None] = print):
        """x_val: float32 [N, T, F]; y_val: int32 [N], the validation set; the fixed digits come from it."""
        self.run_dir, self.config, self.model, self.log = run_dir, config, model, log
        self.writer = TensorBoardWriter(run_dir)
        self.x_val, self.y_val = x_val, y_val
        # The fixed digits: the same ones every epoch, so pictures can be compared across epochs.
        self.reading_indices = [int(np.flatnonzero(y_val == digit)[0]) for digit in READING_DIGITS
                                if np.any(y_val == digit)]
        self.tracing = False
        self.profile = config.profile and profiler_available(log)
        self.profiling = False
        self.interval_started = time.perf_counter()
        self.interval_examples = 0
        self.seconds_writing = 0.0  # wall time spent in the hooks below (see `timed`)

    # --- Once per run ------------------------------------------------------------
    @timed
    def start_of_run(self, model_summary: str) -> None:
        """TEXT, HPARAMS, the layer graph and the input picture, at step 0 of a fresh run."""
        config_dict = self.config.to_dict()
        self.writer.text(config_dict, model_summary)
        self.writer.hparams(config_dict, trial_id=self.run_dir.name)
        self.writer.keras_graph(self.model)
        if len(self.x_val):
            shown = slice(0, SAMPLE_INPUTS)
            self.writer.image("train", 0, "inputs/as_timesteps",
                              sample_inputs_figure(self.x_val[shown], self.y_val[shown]),
                              "validation digits as the LSTM reads them: row t of the image is the input at "
                              "timestep t; the thin lines separate the 28 timesteps")
        self.writer.flush()
        self.tracing = True  # trace the first training step for the GRAPHS tab

    # --- Around every training step ---------------------------------------------------
    def start_epoch(self) -> None:
        """Restart the throughput clock, so validation time is not counted as training time."""
        self.interval_started, self.interval_examples = time.perf_counter(), 0

    @timed
    def before_step(self, step: int) -> None:
        """step: steps taken so far. Starts the graph trace or the profiler when their step comes."""
        if self.tracing:
            self.writer.start_graph_trace()
        if self.profile and step == PROFILE_STEPS[0]:
            tf.profiler.experimental.start(str(self.run_dir))
            self.profiling = True

    @timed
    def after_step(self, step: int, batch_size: int, loss: float, accuracy: float,
                   learning_rate: Callable[[], float], gradient_norm: float) -> None:
        """step: steps taken so far, including this one; learning_rate() reads the current rate."""
        if self.tracing:
            self.writer.export_graph_trace()
            self.tracing = False
        if self.profiling and step >= PROFILE_STEPS[1]:
            tf.profiler.experimental.stop()
            self.profiling = False
            self.log(f"profile: steps {PROFILE_STEPS[0] + 1}..{step} written to {self.run_dir}/plugins/profile "
                     "(TensorBoard's PROFILE tab)")
        self.interval_examples += batch_size
        if step % self.config.log_every_steps == 0:
            seconds = time.perf_counter() - self.interval_started
            self.writer.step(step, loss, accuracy, learning_rate(), gradient_norm,
                             examples_per_second=self.interval_examples / seconds if seconds > 0 else None)
            self.interval_started, self.interval_examples = time.perf_counter(), 0

    # --- Once per epoch -------------------------------------------------------------
    @timed
    def end_of_epoch(self, epoch: int, step: int, train: dict, validation: dict,
                     val_predictions: np.ndarray, gradients: list) -> None:
        """Loss and accuracy every epoch; histograms and pictures every summary_every_epochs epochs.

        val_predictions: int [N], the predicted digit for every validation
        image, in order; gradients: the last training batch's gradients, one
        per trainable weight.
        """
        self.writer.epoch(step, train, validation)
        last = epoch == self.config.epochs
        if epoch % self.config.summary_every_epochs == 0 or last:
            self.writer.weights(step, self.model)
            if gradients is not None:
                self.writer.gradients(step, self.model, gradients)
            if len(self.x_val):
                self.write_validation_pictures(step, val_predictions)

    def write_validation_pictures(self, step: int, predictions: np.ndarray) -> None:
        """Confusion matrix, misclassified digits, gate activations and row-by-row reading."""
        counts = confusion_matrix(self.y_val, predictions)
        accuracy = np.trace(counts) / counts.sum()
        self.writer.image("validation", step, "validation/confusion_matrix",
                          confusion_matrix_figure(counts, f"validation, step {step}: "
                                                          f"{counts.sum() - np.trace(counts)} wrong of "
                                                          f"{counts.sum()} ({accuracy:.2%} right)"),
                          "rows: the true digit; columns: the network's answer; off the diagonal: mistakes")
        wrong = np.flatnonzero(predictions != self.y_val)[:MISCLASSIFIED]
        if len(wrong):
            self.writer.image("validation", step, "validation/misclassified",
                              misclassified_figure(self.x_val[wrong], self.y_val[wrong], predictions[wrong]),
                              f"the first {len(wrong)} validation digits the network gets wrong")
        self.writer.gate_activations(step, model_gate_activations(self.model, self.x_val[:GATE_BATCH]))
        if self.reading_indices and can_read_row_by_row(self.model):
            images = self.x_val[self.reading_indices]  # (N, T, F)
            probabilities = probabilities_after_each_row(self.model, images)  # (N, T, 10)
            self.writer.image("validation", step, "validation/reading_row_by_row",
                              reading_row_by_row_figure(images, self.y_val[self.reading_indices], probabilities,
                                                        [settled_row(p) for p in probabilities]),
                              "the class probabilities after each row: the output layer applied to the "
                              "hidden state of every timestep; the white line marks where the answer settles")

    # --- Once, at the end ---------------------------------------------------------------
    @timed
    def end_of_run(self, step: int, test: dict) -> None:
        self.writer.final(step, test)

    @timed
    def flush(self) -> None:
        self.writer.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        if self.profiling:
            tf.profiler.experimental.stop()
        self.writer.close(quiet=exc_type is not None)  # a full disk must not hide the error already raised
        return False


class NoDashboard:
    """`--no-tensorboard`: the same hooks, doing nothing (nothing is computed, nothing written)."""

    seconds_writing = 0.0

    def start_of_run(self, model_summary):
        pass

    def start_epoch(self):
        pass

    def before_step(self, step):
        pass

    def after_step(self, step, batch_size, loss, accuracy, learning_rate, gradient_norm):
        pass

    def end_of_epoch(self, epoch, step, train, validation, val_predictions, gradients):
        pass

    def end_of_run(self, step, test):
        pass

    def flush(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def profiler_available(log: Callable[[str], None]) -> bool:
    """Whether TensorBoard's profile plugin is installed to show a profile; if not, say how to get it."""
    if importlib.util.find_spec("tensorboard_plugin_profile") is None:
        log("profile: skipped, TensorBoard's profile plugin is not installed; "
            "pip install tensorboard-plugin-profile and run again with --profile")
        return False
    return True
