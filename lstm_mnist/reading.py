"""Reading a digit row by row: what the network would answer after each row.

The classifier only looks at the last hidden state, h_27, after all 28 rows.
But the recurrent layer computes a hidden state after every row, and the
output layer can be applied to each of them:

    rows x_0 .. x_27 -> recurrent layer (return every step) -> h_0 .. h_27   (B, T, R)
                     -> the same Dense head on each h_t        -> logits     (B, T, 10)
                     -> softmax                                -> P(digit | rows 0..t)

(A row is a timestep with the default reading. With --pixels-per-step K the
same holds for T = 784 / K timesteps of K pixels: `probabilities_after_each_row`
returns one answer per timestep, and `probabilities_after_each_line` one per
line of 28 pixels, for the pictures.)

(R is the width of h_t, as in lstm_cell.py: H units, unless the scratch
cell's projection shrinks it.) Row t of the result is the network's guess
had the image ended there. The last row is exactly the trained model's
answer; the rows before it show where the network makes up its mind (a 7
is often settled once its diagonal starts, a 4 and a 9 stay confused until
the top closes or not).

Nothing is retrained or copied: an LSTM's hidden states are replayed from its
own weights by lstm_cell.lstm_forward (gates.lstm_replay, the replay the gate
pictures use: 14 ms for 10 digits here, where Keras's layer stepped one call
per row took 33); any other cell is wrapped in a second `keras.layers.RNN`
that returns every step. The model's own Dense head is reused.
"""

from __future__ import annotations

import keras
import numpy as np

from lstm_mnist.config import FEATURES, IMAGE_PIXELS, TIMESTEPS
from lstm_mnist.gates import is_lstm, layer_inputs, lstm_replay


def last_recurrent_layer(model: keras.Model) -> keras.layers.Layer:
    """The recurrent layer whose final state feeds the output layer."""
    recurrent = [layer for layer in model.layers
                 if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))]
    if not recurrent:
        raise ValueError(f"model {model.name!r} has no recurrent layer")
    return recurrent[-1]


def can_read_row_by_row(model: keras.Model) -> bool:
    """False for a bidirectional model: its backward half only starts from the bottom row,
    so "the answer after row t" does not exist for it."""
    return not isinstance(last_recurrent_layer(model), keras.layers.Bidirectional)


def probabilities_after_each_row(model: keras.Model, pixel_rows) -> np.ndarray:
    """Class probabilities after each row: float32 [B, T, F] -> float32 [B, T, 10].

    result[b, t, d] is the probability of digit d for image b having read rows
    0..t. result[:, -1] equals softmax(model(pixel_rows)).
    """
    last = last_recurrent_layer(model)
    if isinstance(last, keras.layers.Bidirectional):
        raise ValueError("a bidirectional model cannot be read row by row: its backward half "
                         "reads the rows bottom to top")
    # What the last recurrent layer reads: the pixel rows, or what the layers below it hand up.
    sequence_in = layer_inputs(model, last, pixel_rows)  # (B, T, F')
    if is_lstm(last):  # its equations replayed on its own weights: plain operations, no Keras call per row
        hidden = lstm_replay(last, sequence_in)[0]  # (B, T, R)
    else:  # the same cell object, hence the same weights, stepped over every row
        hidden = keras.layers.RNN(last.cell, return_sequences=True, go_backwards=last.go_backwards)(sequence_in)
    # The model's own output layer; Dense acts on the last axis, so on each step.
    logits = model.get_layer("logits")(hidden)  # (B, T, R) -> (B, T, 10)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def probabilities_after_each_line(model: keras.Model, sequences) -> np.ndarray:
    """Class probabilities after each line of 28 pixels read: float32 [B, T, F] -> float32 [B, 28, 10].

    Line l is line l of `figures.sequences_as_pictures(sequences)` (image row l
    unless --permute-pixels); result[:, l] is the answer after the timestep
    that reads the last pixel of line l. With the default reading a line is
    a timestep, and this is `probabilities_after_each_row`; with more than 28
    pixels per step, the lines of one step share the answer after it.
    """
    per_step = probabilities_after_each_row(model, sequences)  # (B, T, 10)
    pixels_per_step = IMAGE_PIXELS // per_step.shape[1]
    last_pixels = np.arange(1, TIMESTEPS + 1) * FEATURES - 1  # (28,) the flattened index of each line's last pixel
    return per_step[:, last_pixels // pixels_per_step]  # (B, T, 10) -> (B, 28, 10)


def settled_row(probabilities: np.ndarray) -> int:
    """The first row from which the most probable digit no longer changes.

    probabilities: float [T, 10] for one image (a slice of
    `probabilities_after_each_row`). Returns t in 0..T-1 such that the argmax
    after every row t, t+1, ..., T-1 equals the final answer; T-1 means the
    network changed its mind at the very last row.
    """
    answers = np.argmax(probabilities, axis=-1)  # (T, 10) -> (T,)
    changed = np.flatnonzero(answers != answers[-1])  # rows whose answer differs from the final one
    return int(changed[-1]) + 1 if len(changed) else 0
