"""The classifier: recurrent layers read the sequence of pixels, a Dense layer names the digit.

    pixels (B, T, F): 28 rows of 28 by default, 784/K steps of K with --pixels-per-step K
        -> [optional Dense input projection, applied to every step]  (B, T, P)
        -> recurrent layer 1 .. L  (all but the last return every step) (B, T, H)
        -> the last layer's final hidden state h_T                    (B, H)
        -> Dense(10): logits, one unnormalised score per digit        (B, 10)

(With `--recurrent-projection R` the scratch LSTM's h_t has R numbers, not H.)

The model returns logits, never probabilities: the loss applies the softmax
itself (`from_logits=True`), which is numerically safer, and anyone who wants
probabilities calls `keras.ops.softmax` on the output.

The defaults (one LSTM, tanh/sigmoid, no recurrent dropout, no unroll) keep
Keras's cuDNN kernel eligible on a GPU, which is several times faster there.
On a CPU, training unrolls the loop over the rows (steps.unroll_for): the
same equations, written out 28 times in the compiled graph.
"""

from __future__ import annotations

import keras
from keras import layers

from lstm_mnist.config import CELL_TYPES, NUM_CLASSES, Config
from lstm_mnist.lstm_cell import ChronoBias, scratch_lstm


def recurrent_layer(cell: str, units: int, return_sequences: bool, name: str,
                    peepholes: bool = False, recurrent_projection: int = 0,
                    chrono_timesteps: int = 0, unroll: bool = False) -> keras.layers.Layer:
    """One recurrent layer of the chosen type, with the classic settings.

    lstm: `unit_forget_bias=True` starts the forget gate's bias at 1, so the
    cell state is kept rather than erased early in training (the classic
    `BasicLSTMCell(forget_bias=1.0)`; Jozefowicz et al., 2015).
    gru: `reset_after=True` is the cuDNN-compatible formulation.
    scratch: the same LSTM written out from its equations (lstm_cell.py),
    also with forget-gate bias 1; the only cell that takes `peepholes` and
    `recurrent_projection`.
    chrono_timesteps: T > 0 gives either LSTM the chrono initialisation for T
    steps instead of forget bias 1 (`--forget-bias-init chrono`, lstm_cell.py).
    unroll: the loop over the T steps written out in the compiled graph, not a tf.while_loop.
    """
    chrono = ChronoBias(chrono_timesteps) if chrono_timesteps else None
    common = dict(return_sequences=return_sequences, name=name, unroll=unroll)
    if cell == "lstm":
        if chrono:
            return layers.LSTM(units, bias_initializer=chrono, unit_forget_bias=False, **common)
        return layers.LSTM(units, unit_forget_bias=True, **common)
    if cell == "gru":
        return layers.GRU(units, reset_after=True, **common)
    if cell == "simple_rnn":
        return layers.SimpleRNN(units, **common)
    if cell == "scratch":
        return scratch_lstm(units, peepholes=peepholes, projection=recurrent_projection, bias_initializer=chrono,
                            **common)
    raise ValueError(f"unknown cell type {cell!r}; expected one of {', '.join(CELL_TYPES)}")


def build_model(config: Config, unroll: bool = False) -> keras.Model:
    """Build the Functional model: float32 [B, T, F] pixels (T, F from the config) -> float32 [B, 10] logits.

    unroll: every recurrent layer's loop written out step by step (faster on a CPU: steps.unroll_for).
    """
    inputs = keras.Input(shape=(config.timesteps, config.features), name="pixel_rows")  # (B, T, F)
    x = inputs
    if config.input_projection:
        # Dense on a 3-D tensor acts on the last axis: every row is projected
        # with the same weights, (B, T, F) -> (B, T, P).
        x = layers.Dense(config.input_projection, name="input_projection")(x)
    for index in range(1, config.layers + 1):
        is_last = index == config.layers
        if index > 1 and config.dropout:
            x = layers.Dropout(config.dropout, name=f"dropout_{index}")(x)
        # Lower layers hand their whole output sequence up, (B, T, H); the
        # last returns only its final hidden state, (B, H).
        rnn = recurrent_layer(config.cell, config.units, return_sequences=not is_last, name=f"{config.cell}_{index}",
                              peepholes=config.peepholes, recurrent_projection=config.recurrent_projection,
                              chrono_timesteps=config.timesteps if config.forget_bias_init == "chrono" else 0,
                              unroll=unroll)
        if config.bidirectional:
            # A second copy reads the rows bottom to top; outputs are
            # concatenated, so H doubles: (B, 2H) or (B, T, 2H).
            rnn = layers.Bidirectional(rnn, name=f"bidirectional_{config.cell}_{index}")
        x = rnn(x)
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout_head")(x)
    # float32 even when the layers before compute in float16 (--mixed-precision): the loss's softmax needs the range.
    logits = layers.Dense(NUM_CLASSES, name="logits", dtype="float32")(x)  # (B, H) -> (B, 10)
    name = f"{'bi' if config.bidirectional else ''}{config.cell}_classifier"
    return keras.Model(inputs, logits, name=name)

