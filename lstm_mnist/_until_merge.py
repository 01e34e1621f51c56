"""TEMPORARY, phase 1 only: the lead deletes this file when merging helpers A's and B's branches.

It gives run.py and train.py the interfaces of /work/notes/phase1.md on top of
the modules as they are on this branch:

- Dashboard(run_dir, config, model, splits, log): the new constructor and hooks
  over the old dashboard.Dashboard (-> lstm_mnist.dashboard.Dashboard, B);
- trim_events_after(run_dir, step, log): the old resume.discard_events_after
  (-> B's modules);
- data_fingerprint(mnist): what A's Mnist.fingerprint will hold
  (-> mnist.fingerprint, A).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lstm_mnist import dashboard as old_dashboard

GRADIENT_BATCH = 128  # training digits whose gradients are histogrammed (B's choice after the merge)


class Dashboard:
    """The phase-1 interface over the old Dashboard (which wanted x_val, y_val and the step's gradients)."""

    def __init__(self, run_dir: Path, config, model, splits, log=print):
        self.old = old_dashboard.Dashboard(run_dir, config, model, splits.x_val, splits.y_val, log)
        self.config, self.model = config, model
        self.x, self.y = splits.x_train[:GRADIENT_BATCH], splits.y_train[:GRADIENT_BATCH]

    @property
    def seconds_writing(self) -> float:
        return self.old.seconds_writing

    def start_of_run(self, model_summary: str) -> None:
        self.old.start_of_run(model_summary)

    def before_step(self, step: int) -> None:
        self.old.before_step(step)

    def after_step(self, step, batch_size, loss, accuracy, learning_rate, gradient_norm) -> None:
        self.old.after_step(step, batch_size, loss, accuracy, learning_rate, gradient_norm)

    def end_of_epoch(self, epoch, step, train, validation, val_predictions) -> None:
        due = epoch % self.config.summary_every_epochs == 0 or epoch == self.config.epochs
        gradients = self.gradients() if due else None
        if validation is not None:
            self.old.end_of_epoch(epoch, step, train, validation, val_predictions, gradients)
        else:  # the old dashboard cannot leave the validation numbers out
            writer = self.old.writer
            with writer.writing(writer.train, step):
                tf.summary.scalar("epoch/loss", train["loss"])
                tf.summary.scalar("epoch/accuracy", train["accuracy"])
            if due:
                writer.weights(step, self.model)
                writer.gradients(step, self.model, gradients)
        self.old.start_epoch()  # the throughput clock restarts after validation

    def gradients(self) -> list:
        with tf.GradientTape() as tape:
            logits = self.model(self.x, training=False)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(self.y, logits, from_logits=True))
        return tape.gradient(loss, self.model.trainable_variables)

    def end_of_run(self, step: int, test: dict) -> None:
        self.old.end_of_run(step, test)

    def flush(self) -> None:
        self.old.flush()

    def close(self, quiet: bool = False) -> None:
        self.old.__exit__(Exception if quiet else None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        return self.old.__exit__(exc_type, *exc_info)


def trim_events_after(run_dir: Path, step: int, log=print) -> int:
    """Remove TensorBoard events with a step after `step` from every event file of the run (old resume.py)."""
    from tensorboard.compat.proto import event_pb2

    removed = 0
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        kept, dropped, truncated = [], 0, False
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                raw = record.numpy()
                event = event_pb2.Event.FromString(raw)
                if event.HasField("summary") and event.step > step:
                    dropped += 1
                else:
                    kept.append(raw)
        except tf.errors.DataLossError:
            truncated = True  # the writer was killed mid-record; everything before it is good
        if dropped or truncated:
            temporary = path.with_name(path.name + ".rewrite")
            with tf.io.TFRecordWriter(str(temporary)) as writer:
                for raw in kept:
                    writer.write(raw)
            os.replace(temporary, path)
            removed += dropped
    return removed


def data_fingerprint(mnist) -> str:
    """sha256 over the four raw arrays (dtype, shape and bytes), in the order x_train, y_train, x_test, y_test."""
    digest = hashlib.sha256()
    for array in (mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return f"sha256:{digest.hexdigest()}"
