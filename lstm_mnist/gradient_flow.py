"""Why an LSTM: how strongly each timestep's input reaches the loss, in a plain RNN, a GRU and an LSTM.

The classifier reads only the last hidden state h_T, so the input at step t
(an image row, by default) can influence the loss only through the chain of
states h_t -> h_{t+1} -> ... -> h_T. The chain rule multiplies one Jacobian
per step along that chain:

    dL/dx_t = dL/dh_T * dh_T/dh_{T-1} * ... * dh_{t+1}/dh_t * dh_t/dx_t

For a plain RNN, h_t = tanh(x_t W + h_{t-1} U + b), each factor is
diag(1 - h_t^2) U^T: a squashing derivative below 1 times the same matrix,
T - t times over. Unless U is just right, the product shrinks geometrically
with the distance to the end (the vanishing gradient; Hochreiter, 1991;
Bengio et al., 1994), so the first steps barely reach the loss and cannot be
learned from. An LSTM has a second path, through the cell state, whose
factor is just the forget gate f_t (bptt.py derives it), and f_t near 1
passes the gradient back almost unchanged; a GRU's update gate plays the
same part.

`input_row_gradient_norms` measures this: for each timestep t, the size of
dL_n/dx_{n,t} (the gradient of one image's loss with respect to its own
input at step t), averaged over a batch of images. `scripts/why_lstm.py`
draws it for each cell, freshly built and trained, at a sequence length
where the cells differ.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

TAG = "gradient_flow/input_row_gradient_norm"  # x-axis ("step") = the input's timestep, 0..T-1 (the row, by default)


def input_row_gradient_norms(model: keras.Model, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean over the batch of ||dL_n / dx_{n,t}||, for every timestep t: float64 [T].

    x: float32 [B, T, F] pixels (28 rows of 28 by default); labels: int [B]; model: x -> logits.
    Each image's loss depends only on its own inputs, so one gradient of the
    summed loss gives every image's own per-step gradient at once.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)  # x is a constant, not a weight: ask the tape to track it
        logits = model(x, training=False)  # (B, T, F) -> (B, 10)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    gradient = tape.gradient(loss, x)  # (B, T, F): dL_n/dx_{n,t}
    per_image_row = tf.norm(gradient, axis=-1)  # (B, T, F) -> (B, T)
    return np.asarray(tf.reduce_mean(per_image_row, axis=0), dtype=np.float64)  # (B, T) -> (T,)


def write_tensorboard(log_dir: Path, curves: dict[str, np.ndarray]) -> None:
    """One TensorBoard run per curve, all under the same tag, so they overlay.

    The scalar's step is the input's timestep (0 = the first pixels read), so
    the x-axis of the TensorBoard chart reads like the x-axis of the PNG.
    """
    for name, norms in curves.items():
        writer = tf.summary.create_file_writer(str(Path(log_dir) / name))
        with writer.as_default():
            for row, norm in enumerate(norms):
                tf.summary.scalar(TAG, norm, step=row, description="mean over images of ||dL/dx_t|| for the input at timestep t")
        writer.close()
