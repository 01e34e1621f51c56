"""The four gates of an LSTM: where they live in Keras's weights, and what they do on real digits.

A Keras LSTM keeps the weights of its four gates side by side in fused
matrices, in the order of lstm_cell.py's `Gates` (input, forget, candidate,
output), each block H (units) columns wide:

    kernel            W (F, 4H)   [ input | forget | candidate | output ]   reads the layer's input x_t
    recurrent_kernel  U (R, 4H)   [ input | forget | candidate | output ]   reads the previous h_{t-1}
    bias              b (4H,)     [ input | forget | candidate | output ]

F is the width of what the layer reads (the 28 pixels of a row, for the
first layer with the default reading; K with --pixels-per-step K) and R the width of h_t, as in lstm_cell.py, whose equation (1)
multiplies these matrices and whose equations (2)-(8) turn the four blocks
into the gates and the new state.

TensorBoard shows each fused matrix as one blur of numbers; `split_gates`
cuts it apart so each gate gets its own histogram, and
`lstm_gate_activations` replays equations (1)-(8) on a batch of digits so the
histograms show what the gates actually do (a forget gate near 1 keeps its
memory; one near 0 erases it).
"""

from __future__ import annotations

import keras
import numpy as np

from lstm_mnist.lstm_cell import Gates, ScratchLSTMCell, lstm_forward


def is_lstm(layer: keras.layers.Layer) -> bool:
    """A recurrent layer whose cell is an LSTM: Keras's own, or the hand-written one of lstm_cell.py."""
    return isinstance(getattr(layer, "cell", None), (keras.layers.LSTMCell, ScratchLSTMCell))


def named_lstms(model: keras.Model) -> list[tuple[keras.layers.Layer, str, keras.layers.RNN]]:
    """(top-level layer, name, LSTM) for every LSTM of `model`, bottom to top.

    The two halves of a Bidirectional are separate LSTMs, named
    "<wrapper>/<half>" (e.g. "bidirectional_lstm_1/forward_lstm_1"), and share
    their top-level layer, the wrapper.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            halves = [(f"{layer.name}/{half.name}", half) for half in (layer.forward_layer, layer.backward_layer)]
        else:
            halves = [(layer.name, layer)]
        found += [(layer, name, half) for name, half in halves if is_lstm(half)]
    return found


def lstm_layers(model: keras.Model) -> list[keras.layers.RNN]:
    """Every LSTM layer of `model`, bottom to top, including both halves of a Bidirectional."""
    return [lstm for _, _, lstm in named_lstms(model)]


def split_gates(fused) -> Gates:
    """Cut a fused LSTM array (a weight or its gradient), [..., 4H], into its four [..., H] gate blocks.

    The kernel's blocks are (F, H), the recurrent kernel's (R, H), the bias's (H,).
    """
    return Gates(*np.split(np.asarray(fused), len(Gates._fields), axis=-1))  # (..., 4H) -> 4 x (..., H)


def fused_weights(layer: keras.layers.RNN) -> list:
    """The weights of an LSTM that hold its four gates side by side: W, U and b (when it has one)."""
    cell = layer.cell
    return [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if getattr(cell, "use_bias", True) else [])


def layer_inputs(model: keras.Model, layer: keras.layers.Layer, pixel_rows) -> np.ndarray:
    """What `layer` (a top-level layer of `model`) reads when `model` reads `pixel_rows`.

    pixel_rows: float32 [B, T, F]. Returns float32 [B, T, F'], F' the width
    of the layer's input: the pixel rows themselves for a first recurrent
    layer, else the sequence the layers below hand up (after the input
    projection, or the previous recurrent layer). Used here and in reading.py.
    """
    if layer.input is model.inputs[0]:
        return np.asarray(pixel_rows, dtype=np.float32)
    below = keras.Model(model.inputs[0], layer.input)  # shares every weight; builds nothing new
    return keras.ops.convert_to_numpy(below(pixel_rows, training=False))


def lstm_gate_activations(layer: keras.layers.RNN, inputs) -> Gates:
    """What each gate of `layer` computed at every step on `inputs`: the Gates of `lstm_replay`."""
    return lstm_replay(layer, inputs)[1]


def lstm_replay(layer: keras.layers.RNN, inputs) -> tuple[np.ndarray, Gates]:
    """Replay `layer`'s equations on `inputs`: the hidden state after every step, and every gate's values.

    inputs: float32 [B, T, F], the sequence the layer reads (for the first
    layer, the pixels: 28 rows by default). Returns h float32 [B, T, R] and
    Gates, each float32 [B, T, H]; step t is the t-th step the layer read (a
    backward layer reads the last one first).

    The replay is lstm_cell.lstm_forward, the package's one hand-written
    LSTM, fed the layer's own weights (tests/test_dashboard.py checks that it
    rebuilds Keras's hidden states). It assumes the standard sigmoid/tanh
    activations, which every model of this package uses.
    """
    cell = layer.cell
    x = np.asarray(inputs, dtype=np.float32)  # (B, T, F)
    if layer.go_backwards:
        x = x[:, ::-1]  # the backward half of a Bidirectional reads the last timestep first
    hidden, _, gates = lstm_forward(x, cell.kernel, cell.recurrent_kernel, cell.bias,
                                    peepholes=getattr(cell, "peephole_weights", None),
                                    projection=getattr(cell, "projection_weights", None))
    return hidden, gates  # (B, T, R), each gate (B, T, H)


def model_gate_activations(model: keras.Model, pixel_rows) -> dict[str, Gates]:
    """Gate activations of every LSTM in `model` on `pixel_rows` (float32 [B, T, F]).

    Returns {layer name: Gates, each float32 [B, T, H]}; the two halves of a
    Bidirectional are named "<wrapper>/<half>", e.g. "bidirectional_lstm_1/forward_lstm_1".
    """
    activations, inputs = {}, {}
    for layer, name, lstm in named_lstms(model):
        if layer.name not in inputs:  # both halves of a Bidirectional read the same sequence
            inputs[layer.name] = layer_inputs(model, layer, pixel_rows)  # (B, T, F')
        activations[name] = lstm_gate_activations(lstm, inputs[layer.name])
    return activations
