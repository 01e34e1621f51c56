"""What each run writes to TensorBoard, and under which tags.

Three runs appear in TensorBoard for every training run, one sub-folder each,
so the same tag in two of them is drawn as two overlaid curves:

    <run_dir>/train/       epoch/loss, epoch/accuracy     once per epoch
                           step/loss, step/accuracy       every log_every_steps steps
                           optimizer/learning_rate, optimizer/gradient_norm
                           weights/<layer>/<cell>/<weight>   histograms, once per epoch
    <run_dir>/validation/  epoch/loss, epoch/accuracy     once per epoch
    <run_dir>/test/        final/loss, final/accuracy     once, at the end

The x-axis of every scalar is the global training step (the optimizer's
iteration count), so train and validation points line up and a longer run
simply extends to the right.

Histogram tags use each variable's Keras path, e.g.
`weights/lstm_1/lstm_cell/recurrent_kernel`. The stock Keras TensorBoard
callback names them by the bare weight name (`kernel`, `bias`), so every
layer's kernel lands under one tag and the histograms collide.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf


class TensorBoardWriter:
    """Owns the three event-file writers of one run and knows every tag."""

    def __init__(self, run_dir: Path):
        self.train = tf.summary.create_file_writer(str(run_dir / "train"))
        self.validation = tf.summary.create_file_writer(str(run_dir / "validation"))
        self.test = tf.summary.create_file_writer(str(run_dir / "test"))

    def step(self, step: int, loss: float, accuracy: float, learning_rate: float, gradient_norm: float) -> None:
        """Scalars of one training batch (noisy; TensorBoard's smoothing slider helps)."""
        with self.train.as_default(step=step):
            tf.summary.scalar("step/loss", loss)
            tf.summary.scalar("step/accuracy", accuracy)
            tf.summary.scalar("optimizer/learning_rate", learning_rate)
            tf.summary.scalar("optimizer/gradient_norm", gradient_norm, description="global L2 norm before clipping")

    def epoch(self, step: int, train: dict, validation: dict) -> None:
        """Epoch means of loss and accuracy, under the same tags in both runs so they overlay."""
        for writer, metrics in ((self.train, train), (self.validation, validation)):
            with writer.as_default(step=step):
                tf.summary.scalar("epoch/loss", metrics["loss"])
                tf.summary.scalar("epoch/accuracy", metrics["accuracy"])

    def weights(self, step: int, model: keras.Model) -> None:
        """One histogram per weight tensor, tagged by its unique Keras path."""
        with self.train.as_default(step=step):
            for variable in model.weights:
                tf.summary.histogram(f"weights/{variable.path}", variable)

    def final(self, step: int, test: dict) -> None:
        with self.test.as_default(step=step):
            tf.summary.scalar("final/loss", test["loss"])
            tf.summary.scalar("final/accuracy", test["accuracy"])

    def flush(self) -> None:
        for writer in (self.train, self.validation, self.test):
            writer.flush()

    def close(self) -> None:
        for writer in (self.train, self.validation, self.test):
            writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False
