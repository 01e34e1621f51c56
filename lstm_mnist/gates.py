"""The four gates of an LSTM: where they live in Keras's weights, and what they do on real digits.

A Keras LSTM keeps the weights of its four gates side by side in one fused
matrix, in the order i, f, c, o (input gate, forget gate, cell candidate,
output gate), each block `units` columns wide:

    kernel            (D, 4H)   [ W_i | W_f | W_c | W_o ]   reads the input row x_t
    recurrent_kernel  (H, 4H)   [ U_i | U_f | U_c | U_o ]   reads the previous hidden state h_{t-1}
    bias              (4H,)     [ b_i | b_f | b_c | b_o ]

At every timestep (every image row) the cell computes

    z_t = x_t W + h_{t-1} U + b                 (B, 4H), split into four (B, H) blocks
    i_t = sigmoid(z_i)   how much of the candidate to write
    f_t = sigmoid(z_f)   how much of the old cell state to keep
    g_t = tanh(z_c)      the candidate: what to write
    o_t = sigmoid(z_o)   how much of the cell state to show as h_t
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

TensorBoard shows the fused matrices as one blur of numbers; `weight_gates`
cuts them apart so each gate gets its own histogram, and
`lstm_gate_activations` replays the equations above on a batch of digits so
the histograms show what the gates actually do (a forget gate near 1 keeps
its memory; one near 0 erases it).
"""

from __future__ import annotations

import keras
import numpy as np

from lstm_mnist.lstm_cell import ScratchLSTMCell, lstm_forward
from lstm_mnist.model import layer_inputs

# Keras's order of the four blocks in every fused LSTM weight.
GATES = ("input", "forget", "cell", "output")


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


def split_gates(fused) -> dict[str, np.ndarray]:
    """Cut a fused LSTM array (a weight or its gradient), [..., 4H], into its four [..., H] gate blocks."""
    return dict(zip(GATES, np.split(np.asarray(fused), len(GATES), axis=-1)))  # (..., 4H) -> four (..., H)


def weight_gates(layer: keras.layers.RNN) -> dict[str, dict[str, np.ndarray]]:
    """The kernel, recurrent kernel and bias of an LSTM, each cut into its four gates.

    Returns {variable path: {"input": block, "forget": block, "cell": block,
    "output": block}}; a block is (D, H) for the kernel, (H, H) for the
    recurrent kernel and (H,) for the bias. The last axis holds the gates
    side by side, so splitting it into four equal parts separates them.
    """
    cell = layer.cell
    variables = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if getattr(cell, "use_bias", True) else [])
    return {variable.path: split_gates(variable) for variable in variables}


def lstm_gate_activations(layer: keras.layers.RNN, inputs) -> dict[str, np.ndarray]:
    """Replay `layer`'s equations on `inputs` and return what each gate computed at every step.

    inputs: float32 [B, T, D], the sequence the layer reads (for the first
    layer, the pixel rows). Returns {"input": i, "forget": f, "cell": g,
    "output": o}, each float32 [B, T, H]; step t is the t-th row the layer
    read (a backward layer reads the last row first).

    The replay is lstm_cell.lstm_forward, the package's one hand-written
    LSTM, fed the layer's own weights (tests/test_dashboard.py checks that
    it rebuilds Keras's hidden states). It assumes the standard sigmoid/tanh
    activations, which every model of this package uses.
    """
    cell = layer.cell
    x = np.asarray(inputs, dtype=np.float32)  # (B, T, D)
    if layer.go_backwards:
        x = x[:, ::-1]  # the backward half of a Bidirectional reads row 27 first
    _, _, gates = lstm_forward(x, cell.kernel, cell.recurrent_kernel, cell.bias,
                               peepholes=getattr(cell, "peephole_weights", None),
                               projection=getattr(cell, "projection_weights", None))
    # lstm_forward calls the cell candidate `candidate`; TensorBoard's tags call it `cell`, like Keras's kernels.
    return dict(zip(GATES, (gates.input, gates.forget, gates.candidate, gates.output)))  # each (B, T, H)


def model_gate_activations(model: keras.Model, pixel_rows) -> dict[str, dict[str, np.ndarray]]:
    """Gate activations of every LSTM in `model` on `pixel_rows` (float32 [B, T, F]).

    Returns {layer name: {gate: float32 [B, T, H]}}; the two halves of a
    Bidirectional are named "<wrapper>/<half>", e.g. "bidirectional_lstm_1/forward_lstm_1".
    """
    activations, inputs = {}, {}
    for layer, name, lstm in named_lstms(model):
        if layer.name not in inputs:  # both halves of a Bidirectional read the same sequence
            inputs[layer.name] = layer_inputs(model, layer, pixel_rows)  # (B, T, D)
        activations[name] = lstm_gate_activations(lstm, inputs[layer.name])
    return activations
