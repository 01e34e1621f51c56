"""When each TensorBoard summary is written during training (summaries.py says what, and under which tag).

The training loop creates a Dashboard only when TensorBoard is on
(`--no-tensorboard` means no Dashboard at all) and calls its hooks:

    start_of_run(summary)   once, at step 0 of a new run: TEXT (config, model summary),
                            HPARAMS, the Keras layer graph, the initial weights'
                            histograms, the sample-inputs picture
    before_step(step)       the first compiled call of a new run (ten training steps,
                            steps.several_steps_per_call) is traced for the GRAPHS tab;
                            with --profile, a few steps are profiled
    after_step(...)         every log_every_steps steps and at each epoch's last step:
                            step scalars and throughput
    end_of_epoch(...)       every epoch: loss and accuracy; every summary_every_epochs
                            epochs and after the last: the histograms and pictures
    end_of_run(step, test)  the test numbers: scalars, and a sentence in TEXT
    flush()                 before each checkpoint: the events it covers are on disk

Cheap things (scalars) are written often; expensive things (histograms of
every weight and gradient, gate activations, pictures) once per
epoch by default, which costs a few percent of the training time
(scripts/benchmark_logging.py measures it).

A resumed run never writes anything twice at the same step: the once-per-run
summaries are written only when a run starts fresh (they sit at step 0, before
any checkpoint, so a resume keeps them), and everything else is written at
the step it describes, after which `trim_events_after`, called once a
checkpoint is restored, removes what a crash left past that checkpoint.
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
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2

from lstm_mnist.config import FEATURES, Config
from lstm_mnist.durable import sync_folder, write_bytes
from lstm_mnist.errors import plain_reason
from lstm_mnist.figures import (
    confusion_matrix,
    confusion_matrix_figure,
    misclassified_figure,
    reading_row_by_row_figure,
    sample_inputs_figure,
    sequences_as_pictures,
)
from lstm_mnist.gates import model_gate_activations
from lstm_mnist.reading import can_read_row_by_row, probabilities_after_each_line, settled_row
from lstm_mnist.summaries import SummaryWriteError, TensorBoardWriter

SAMPLE_INPUTS = 6  # training digits shown as sequences of rows
GATE_BATCH = 128  # validation digits whose gate activations are histogrammed
MISCLASSIFIED = 16  # wrongly classified validation digits shown per epoch
READING_DIGITS = (1, 3, 4, 5, 7, 9)  # one validation image of each is read row by row
PROFILE_STEPS = (5, 10)  # profile steps 5..9 of the run: after the first steps' tracing and warm-up


def reading_caption(timesteps: int, pixels_per_step: int) -> str:
    """The caption under inputs/as_timesteps: how the pictured digits are cut into timesteps."""
    if pixels_per_step == FEATURES:  # the default: one image row per timestep
        return ("training digits as the LSTM reads them: row t of the image is the input at timestep t; "
                "the blue lines separate the timesteps")
    return (f"training digits as the network reads them: {timesteps} timesteps of {pixels_per_step} pixels, "
            "left to right and top to bottom; the blue lines mark where a timestep starts")


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

    def __init__(self, run_dir: Path, config: Config, model: keras.Model, splits,
                 log: Callable[[str], None] = print):
        """splits: data.Splits (x_val float32 [N, T, F], y_val int32 [N], ...); the fixed digits come from it."""
        self.run_dir, self.config, self.model, self.log = run_dir, config, model, log
        self.writer = TensorBoardWriter(run_dir)
        # The fixed digits: the same ones every epoch, so pictures and histograms compare across epochs.
        self.sample_inputs = splits.sequences(splits.train_images[:SAMPLE_INPUTS])  # (S, T, F)
        self.sample_labels, self.train_images = splits.y_train[:SAMPLE_INPUTS], len(splits.y_train)
        self.x_val, self.y_val = splits.x_val, splits.y_val
        self.test_images = len(splits.x_test)
        self.reading_indices = [int(np.flatnonzero(self.y_val == digit)[0]) for digit in READING_DIGITS
                                if np.any(self.y_val == digit)]
        self.tracing = False
        self.profile = config.profile and profiler_available(log)
        self.profiling = False
        self.interval_started, self.interval_examples = None, 0  # throughput clock; None: start at the next step
        self.seconds_writing = 0.0  # wall time spent in the hooks below (see `timed`)

    # --- Once per run ------------------------------------------------------------
    @timed
    def start_of_run(self, model_summary: str) -> None:
        """TEXT, HPARAMS, the layer graph, the initial weights and the input picture, at step 0 of a fresh run."""
        config_dict = self.config.to_dict()
        self.writer.text(config_dict, model_summary)
        self.writer.hparams(config_dict, trial_id=self.run_dir.name)
        self.writer.keras_graph(self.model)
        # The weights before any step: where training starts (the forget gate's bias at 1), and a second
        # point in time, without which DISTRIBUTIONS draws nothing for a run of one epoch.
        self.writer.weights(0, self.model)
        self.writer.image("train", 0, "inputs/as_timesteps",
                          sample_inputs_figure(sequences_as_pictures(self.sample_inputs), self.sample_labels,
                                               pixels_per_step=self.sample_inputs.shape[2]),
                          reading_caption(*self.sample_inputs.shape[1:]))
        self.tracing = True  # trace the first compiled call (its ten steps) for the GRAPHS tab

    # --- Around every training step ---------------------------------------------------
    @timed
    def before_step(self, step: int) -> None:
        """step: steps taken so far. Starts the graph trace or the profiler when their step comes."""
        if self.interval_started is None:  # the epoch's first step: validation time is not training time
            self.interval_started = time.perf_counter()
        if self.tracing:
            self.writer.start_graph_trace()
        if self.profile and step == PROFILE_STEPS[0]:
            tf.profiler.experimental.start(str(self.run_dir))
            self.profiling = True

    @timed
    def after_step(self, step: int, batch_size: int, loss: float, accuracy: float,
                   learning_rate: Callable[[], float], gradient_norm: float, ends_epoch: bool = False) -> None:
        """step: steps taken so far, including this one; learning_rate() reads the rate this step applied.

        The step scalars are written every log_every_steps steps, and at the last step of each epoch
        (ends_epoch), so that a run shorter than log_every_steps still has its learning-rate curve.
        """
        if self.tracing:
            self.writer.export_graph_trace()
            self.tracing = False
        if self.profiling and step >= PROFILE_STEPS[1]:
            tf.profiler.experimental.stop()
            self.profiling = False
            self.log(f"profile: steps {PROFILE_STEPS[0] + 1}..{step} written to {self.run_dir}/plugins/profile "
                     "(TensorBoard's PROFILE tab)")
        self.interval_examples += batch_size
        if step % self.config.log_every_steps == 0 or ends_epoch:
            seconds = time.perf_counter() - self.interval_started
            self.writer.step(step, loss, accuracy, learning_rate(), gradient_norm,
                             examples_per_second=self.interval_examples / seconds if seconds > 0 else None)
            self.interval_started, self.interval_examples = time.perf_counter(), 0

    # --- Once per epoch -------------------------------------------------------------
    @timed
    def end_of_epoch(self, epoch: int, step: int, train: dict, validation: dict | None,
                     val_predictions: np.ndarray, gradients: list | None = None) -> None:
        """Loss and accuracy every epoch; histograms and pictures every summary_every_epochs epochs.

        validation: None when there is no validation set (--val-size 0): then
        nothing is written for it. val_predictions: int [N], the predicted
        digit of every validation image, in order. gradients: those of the
        epoch's last training step, one per weight (None: not histogrammed).
        """
        self.writer.epoch(step, train, validation)
        if epoch % self.config.summary_every_epochs == 0 or epoch == self.config.epochs:
            self.writer.weights(step, self.model)
            if gradients is not None:  # taken from the training step itself: no pass of their own
                self.writer.gradients(step, self.model, gradients,
                                      f"the gradient of the mean loss on step {step:,}'s training batch, "
                                      "as Adam applied it (after clipping to --clip-norm)")
            if validation is not None:
                self.write_validation_pictures(step, val_predictions)
        self.interval_started, self.interval_examples = None, 0

    def write_validation_pictures(self, step: int, predictions: np.ndarray) -> None:
        """Confusion matrix, misclassified digits, gate activations and row-by-row reading."""
        counts = confusion_matrix(self.y_val, predictions)
        accuracy = np.trace(counts) / counts.sum()
        self.writer.image("validation", step, "validation/confusion_matrix",
                          confusion_matrix_figure(counts, f"validation, step {step:,}\n"
                                                          f"{counts.sum() - np.trace(counts):,} wrong of "
                                                          f"{counts.sum():,} ({accuracy:.2%} right)"),
                          "rows: the true digit; columns: the network's answer; off the diagonal: mistakes")
        wrong = np.flatnonzero(predictions != self.y_val)[:MISCLASSIFIED]
        if len(wrong):
            self.writer.image("validation", step, "validation/misclassified",
                              misclassified_figure(sequences_as_pictures(self.x_val[wrong]), self.y_val[wrong],
                                                   predictions[wrong]),
                              f"the first {len(wrong)} validation digits the network gets wrong, "
                              "each under its true digit -> the network's answer")
        shown = self.x_val[:GATE_BATCH]
        self.writer.gate_activations(step, model_gate_activations(self.model, shown),
                                     f"the gate's values on the first {len(shown)} validation digits, "
                                     "every unit and every row")
        if self.reading_indices and can_read_row_by_row(self.model):
            sequences = self.x_val[self.reading_indices]  # (N, T, F)
            images = sequences_as_pictures(sequences)  # (N, 28, 28)
            probabilities = probabilities_after_each_line(self.model, sequences)  # (N, 28, 10)
            self.writer.image("validation", step, "validation/reading_row_by_row",
                              reading_row_by_row_figure(images, self.y_val[self.reading_indices], probabilities,
                                                        [settled_row(p) for p in probabilities]),
                              "the class probabilities after each row: the output layer applied to the "
                              "hidden state of every timestep; the white line marks the row from which the "
                              "answer no longer changes")

    # --- Once, at the end ---------------------------------------------------------------
    @timed
    def end_of_run(self, step: int, test: dict) -> None:
        """test: the test set's loss and accuracy, measured once, after training."""
        wrong = round((1 - test["accuracy"]) * self.test_images)
        epochs = f"{self.config.epochs} epoch" + ("s" if self.config.epochs > 1 else "")
        self.writer.final(step, test, f"test accuracy **{test['accuracy']:.2%}** ({wrong:,} wrong of "
                                      f"{self.test_images:,} test images), test loss {test['loss']:.4f}, after "
                                      f"{epochs} on {self.train_images:,} training images ({step:,} steps)")

    @timed
    def flush(self) -> None:
        self.writer.flush()

    def close(self, quiet: bool = False) -> None:
        """Stop the profiler if it runs; flush and close the event files. quiet: ignore write errors."""
        if self.profiling:
            tf.profiler.experimental.stop()
            self.profiling = False
        self.writer.close(quiet)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        self.close(quiet=exc_type is not None)  # a full disk must not hide the error already raised
        return False


def profiler_available(log: Callable[[str], None]) -> bool:
    """Whether TensorBoard's profile plugin is installed to show a profile; if not, say how to get it."""
    if importlib.util.find_spec("tensorboard_plugin_profile") is None:
        log("profile: skipped, TensorBoard's profile plugin is not installed; "
            "pip install tensorboard-plugin-profile and run again with --profile")
        return False
    return True


# --- On resume: trim the event files back to the checkpoint ----------------------------
EVENT_FOLDERS = ("train", "validation", "test")  # inside the run folder, which holds the HPARAMS events itself
RECORD_FRAMING = 16  # bytes around each record: 8-byte length, its 4-byte CRC, then the data's 4-byte CRC


def trim_events_after(run_dir: Path, step: int, log: Callable[[str], None]) -> int:
    """Remove every TensorBoard event past `step` (the restored checkpoint) from the run's event files.

    Returns how many events were removed. A last record cut off by a crash
    (the writer killed mid-record) is dropped too. A file damaged inside (a
    record failing its checksum) is kept exactly as it is, readable up to
    the damage, and one line says so. Each trimmed file is rewritten durably
    (durable.py: a fresh temporary file, fsync, rename, folder fsync), so a
    crash here loses nothing. A symlink in place of an event file, an event
    folder or the temporary file is refused, never followed.
    """
    removed = 0
    try:
        for path in event_files(run_dir):
            content = path.read_bytes()
            events, damaged = read_events(path)
            starts = np.cumsum([0] + [len(raw) + RECORD_FRAMING for raw, _ in events])  # where each record begins
            if damaged:  # the records after the damage cannot be found, so nothing is rewritten
                log(f"TensorBoard: {path} is damaged at byte {starts[-1]} of {len(content)} (a record fails its "
                    f"checksum); kept as it is, {len(events)} events readable before the damage, "
                    f"none of its events after step {step} removed")
                continue
            keep = [index for index, (_, event) in enumerate(events)
                    if not (event.HasField("summary") and event.step > step)]
            if len(keep) < len(events) or starts[-1] < len(content):  # events to drop, or a cut-off last record
                write_bytes(path, b"".join(content[starts[i]:starts[i + 1]] for i in keep))  # records as they were
                removed += len(events) - len(keep)
    except (OSError, tf.errors.OpError) as error:
        raise SummaryWriteError(f"could not trim the TensorBoard events of {run_dir} to step {step} "
                                f"({plain_reason(error)})") from None
    return removed


def event_files(run_dir: Path) -> list[Path]:
    """The run's event files, after removing the temporary files of a trim that was killed."""
    found = []
    for folder in [run_dir, *(run_dir / name for name in EVENT_FOLDERS)]:
        if folder != run_dir:
            refuse_symlink(folder)
        if folder.is_dir():
            for stale in folder.glob(".events.out.tfevents.*.tmp"):  # TensorBoard would read it as events
                refuse_symlink(stale)
                stale.unlink()
                sync_folder(folder)
            for path in sorted(folder.glob("events.out.tfevents.*")):
                refuse_symlink(path)
                found.append(path)
    return found


def refuse_symlink(path: Path) -> None:
    if path.is_symlink():
        raise SummaryWriteError(f"refusing to trim TensorBoard events: {path} is a symbolic link "
                                "(a run folder never contains one); remove it and resume again", exit_code=2)


def read_events(path: Path) -> tuple[list[tuple[bytes, event_pb2.Event]], bool]:
    """The records of an event file and their events, up to its end or a cut-off last record.

    damaged (the second value) is True when a record inside the file fails
    its checksum or does not parse; the records before it are returned.
    """
    events = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            raw = record.numpy()
            events.append((raw, event_pb2.Event.FromString(raw)))
    except tf.errors.DataLossError as error:
        return events, "truncated record" not in error.message  # TensorFlow's words for a record that ends early
    except DecodeError:
        return events, True
    return events, False
