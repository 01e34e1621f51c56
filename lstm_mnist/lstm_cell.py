"""The LSTM cell written out from its equations, and a Keras layer built on it.

An LSTM reads a sequence one step at a time, here a digit one row at a time,
and must carry what matters from the early rows to the answer it gives after
the last. It keeps two states: the cell state c, a memory that the gates add
to and erase, and the hidden state h, what the cell shows of that memory to
the next row and to the classifier. Three sigmoid gates, valves between 0
and 1, decide how much of the memory to keep (forget gate), how much of a
tanh candidate, a signed value between -1 and 1, to write into it (input
gate), and how much of it to show (output gate).

At every timestep t (one image row, by default) the cell reads the row x_t and its own
previous state (h_{t-1}, c_{t-1}), and computes:

    z_t = x_t W + h_{t-1} U + b                  (1)  all four gates' pre-activations at once, (B, 4H)
    i_t = sigmoid(z_i + p_i * c_{t-1})           (2)  input gate: how much of g_t to write
    f_t = sigmoid(z_f + p_f * c_{t-1})           (3)  forget gate: how much of c_{t-1} to keep
    g_t = tanh(z_g)                              (4)  candidate: the signed values to write
    c_t = f_t * c_{t-1} + i_t * g_t              (5)  the cell state: a gated running sum
    o_t = sigmoid(z_o + p_o * c_t)               (6)  output gate: how much of the cell to show
    m_t = o_t * tanh(c_t)                        (7)  the cell's output
    h_t = m_t P                                  (8)  the hidden state fed back at t+1 (h_t = m_t without P)

z_t is cut into four (B, H) blocks, z_i, z_f, z_g, z_o, one per gate;
`*` is the elementwise product and h_0 = c_0 = 0. The shape letters, here
and in every docstring and comment of the package:

    B batch, T timesteps (image rows, by default), F features (pixels per timestep),
    H units, R width of h_t (R = H unless the projection P is used)
    x_t (B, F)   W: kernel (F, 4H)   U: recurrent_kernel (R, 4H)   b: bias (4H,)
    c_t, i_t, f_t, g_t, o_t, m_t (B, H)   h_t (B, R)   p_i, p_f, p_o (H,)   P (H, R)

These equations are written out in full only here (the README's copy is
checked against this block by a test); everywhere else they are referred
to by number. The README's "A step by hand" works them through for one row
of a 2-unit cell, every value printed (tests/test_worked_step.py checks it).

**One product for four gates.** Equation (1) is [x_t, h_{t-1}] @ [W; U] + b:
the four gates' weights sit side by side in W and U, so one (B, F) @ (F, 4H)
product and one (B, R) @ (R, 4H) product give every gate's pre-activation at
once, instead of eight small products. It is written as two products so that
W and U keep exactly Keras's layout (`kernel`, `recurrent_kernel`), and a
trained `keras.layers.LSTM`'s weights can be copied in unchanged.

**Gate order.** The 4H columns are [input | forget | candidate | output],
the order of Keras's weights (Keras's source calls the blocks i, f, c, o;
its c is our candidate g). TF1's `LSTMCell` used (i, j, f, o) instead, which
is why weights cannot be copied between the two without reordering.

**Forget-gate bias 1.** The bias starts at 0 except the forget gate's block,
which starts at 1 (`unit_forget_bias=True` in Keras, `forget_bias=1.0` in
TF1): with f_t near sigmoid(1) = 0.73 the cell state is kept, and its gradient
flows, from the first step (Jozefowicz et al., 2015; long sequences: `ChronoBias`).

**Options.**
Peepholes (Gers & Schmidhuber, 2000): the gates also look at the cell
state, through one weight per unit (p_i, p_f, p_o, elementwise). The input
and forget gates see c_{t-1}; the output gate sees the new c_t. They start
at 0, so a peephole cell starts as exactly the plain LSTM and learns how
much to peek. Without peepholes the p terms are absent.
Projection (LSTMP; Sak et al., 2014): h_t = m_t P shrinks the state that is
fed back from H to R numbers, so U has R rows instead of H. The recurrent
weights shrink from 4H*H to 4H*R + H*R, which is why large speech models
used it.
Dropout: `--dropout` drops the inputs of every stacked layer after the
first and of the classifier head, i.e. only the non-recurrent connections
(Zaremba et al., 2014), so the cell-state path from row to row is never
disturbed. Those are ordinary `keras.layers.Dropout` layers between the
recurrent layers, so they work with this cell unchanged and it needs no
dropout of its own.

What this module offers:

    lstm_step(x_t, h_prev, c_prev, kernel, recurrent_kernel, bias, peepholes=None, projection=None)
        -> (h_t, c_t, Gates)      one timestep, equations (1)-(8), in keras.ops
    lstm_forward(x, kernel, recurrent_kernel, bias, peepholes=None, projection=None)
        -> (h_seq, c_seq, gates)  a whole sequence, as NumPy arrays (stable API)
    ScratchLSTMCell(units, peepholes=False, projection=0)
        a Keras cell whose `call` is lstm_step
    scratch_lstm(units, ...) -> keras.layers.RNN    the layer `--cell scratch` uses

`lstm_forward` is the function to use for looking inside a (trained) LSTM:
give it a batch of rows and the weights of a `keras.layers.LSTM`
(`layer.cell.kernel`, `layer.cell.recurrent_kernel`, `layer.cell.bias`) and
it returns every timestep's hidden state, cell state and gate activations.

`tests/test_lstm_cell.py` copies a `keras.layers.LSTM`'s weights into this
cell and checks that both give the same outputs at every timestep and the
same gradients; `bptt.py` differentiates these equations by hand.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
from keras import ops


class Gates(NamedTuple):
    """The four gate activations, in the order of Keras's weights: input, forget, candidate, output.

    In `lstm_step` each is (B, H); in `lstm_forward` each is (B, T, H).
    `candidate` is g_t = tanh(z_g), in (-1, 1); the other three are in (0, 1).
    """

    input: np.ndarray
    forget: np.ndarray
    candidate: np.ndarray
    output: np.ndarray


class Peepholes(NamedTuple):
    """Peephole weights p_i, p_f, p_o, each (H,): one weight per unit, applied elementwise."""

    input: np.ndarray
    forget: np.ndarray
    output: np.ndarray


def lstm_step(x_t, h_prev, c_prev, kernel, recurrent_kernel, bias,
              peepholes: Peepholes | None = None, projection=None):
    """One timestep of the LSTM: equations (1)-(8) of the module docstring.

    x_t (B, F), h_prev (B, R), c_prev (B, H); kernel (F, 4H),
    recurrent_kernel (R, 4H), bias (4H,); peepholes: three (H,) or None;
    projection (H, R) or None. Returns h_t (B, R), c_t (B, H) and the
    Gates, each (B, H). Written in keras.ops, so it runs on NumPy arrays
    and inside a compiled Keras layer alike.
    """
    # The fused product: (B, F) @ (F, 4H) + (B, R) @ (R, 4H) + (4H,) -> (B, 4H), all four gates at once.
    z = ops.matmul(x_t, kernel) + ops.matmul(h_prev, recurrent_kernel) + bias  # eq. (1)
    z_input, z_forget, z_candidate, z_output = ops.split(z, 4, axis=-1)  # eq. (1) (B, 4H) -> 4 x (B, H)
    if peepholes is not None:
        # The input and forget gates peek at the state they are about to change.
        z_input = z_input + peepholes.input * c_prev  # eq. (2) peephole: (B, H) + (H,) * (B, H)
        z_forget = z_forget + peepholes.forget * c_prev  # eq. (3) peephole
    input_gate = ops.sigmoid(z_input)  # eq. (2)
    forget_gate = ops.sigmoid(z_forget)  # eq. (3)
    candidate = ops.tanh(z_candidate)  # eq. (4)
    c_t = forget_gate * c_prev + input_gate * candidate  # eq. (5)  (B, H)
    if peepholes is not None:
        # The output gate peeks at the new cell state, which is what it lets out.
        z_output = z_output + peepholes.output * c_t  # eq. (6) peephole
    output_gate = ops.sigmoid(z_output)  # eq. (6)
    m_t = output_gate * ops.tanh(c_t)  # eq. (7)  (B, H)
    h_t = m_t if projection is None else ops.matmul(m_t, projection)  # eq. (8)  (B, H) @ (H, R) -> (B, R)
    return h_t, c_t, Gates(input_gate, forget_gate, candidate, output_gate)


def lstm_forward(x, kernel, recurrent_kernel, bias, peepholes: Peepholes | None = None, projection=None):
    """Run the cell over a whole sequence, from h_0 = c_0 = 0, and keep every step.

    x: float [B, T, F], e.g. a batch of digits as rows. The weights are laid out
    as in `keras.layers.LSTM` (the cell's kernel, recurrent_kernel, bias):
        kernel [F, 4H], recurrent_kernel [R, 4H], bias [4H], gates in the order
        input, forget, candidate, output
        peepholes: Peepholes of three [H] arrays, or None
        projection: [H, R], or None (then R = H)
    Weights may be NumPy arrays or Keras/TF variables; everything is computed
    in x's dtype (float32, or float64 for gradient checks).

    Returns NumPy arrays of x's dtype:
        h_seq [B, T, R]   the hidden state after each row: h_seq[:, t] = h_t
        c_seq [B, T, H]   the cell state after each row
        gates: Gates(input, forget, candidate, output), each [B, T, H]

    h_seq[:, -1] is what the classifier head reads. This signature is
    stable: other modules (the TensorBoard gate plots, bptt.py) rely on it.
    """
    x = np.asarray(x)
    dtype = x.dtype
    kernel, recurrent_kernel, bias = (np.asarray(w, dtype) for w in (kernel, recurrent_kernel, bias))
    if peepholes is not None:
        peepholes = Peepholes(*(np.asarray(p, dtype) for p in peepholes))
    if projection is not None:
        projection = np.asarray(projection, dtype)
    batch, timesteps, _ = x.shape
    units = bias.shape[0] // 4
    h = np.zeros((batch, recurrent_kernel.shape[0]), dtype)  # h_0 (B, R)
    c = np.zeros((batch, units), dtype)  # c_0 (B, H)
    hs, cs, gates = [], [], []
    for t in range(timesteps):
        h, c, step_gates = lstm_step(x[:, t], h, c, kernel, recurrent_kernel, bias, peepholes, projection)
        hs.append(h)
        cs.append(c)
        gates.append(step_gates)

    def stack(tensors):  # T x (B, n) -> (B, T, n)
        return np.stack([ops.convert_to_numpy(tensor) for tensor in tensors], axis=1)

    return stack(hs), stack(cs), Gates(*(stack(gate) for gate in zip(*gates)))


def forget_bias_one(shape, dtype=None):
    """Bias initializer: 0 for the input, candidate and output blocks, 1 for the forget block."""
    units = shape[0] // 4
    return ops.concatenate([ops.zeros((units,), dtype), ops.ones((units,), dtype),
                            ops.zeros((2 * units,), dtype)])


@keras.saving.register_keras_serializable(package="lstm_mnist")
class ScratchLSTMCell(keras.layers.Layer):
    """One timestep of the LSTM as a Keras cell; `keras.layers.RNN` loops it over the rows.

    Same weights, names, shapes, initializers and state order ([h, c]) as
    `keras.layers.LSTMCell`, so the two are interchangeable and a trained
    Keras LSTM's weights load straight into this cell. Peephole weights are
    called peephole_input/forget/output (H,), the projection `projection` (H, R).
    """

    def __init__(self, units: int, peepholes: bool = False, projection: int = 0, bias_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if units <= 0 or projection < 0:
            raise ValueError(f"units must be positive and projection 0 or more, got {units} and {projection}")
        self.units = units
        self.peepholes = peepholes
        self.projection = projection
        # forget_bias_one unless told otherwise (model.py passes ChronoBias for --forget-bias-init chrono).
        self.bias_initializer = keras.initializers.get(bias_initializer) if bias_initializer else forget_bias_one
        self.recurrent_units = projection or units  # R, the width of h_t
        # keras.layers.RNN reads these: the states it carries and what each step outputs.
        self.state_size = [self.recurrent_units, units]  # [h, c], Keras's order
        self.output_size = self.recurrent_units

    def build(self, input_shape):
        features = input_shape[-1]
        # Built in the same order, with the same initializers, as keras.layers.LSTMCell.
        self.kernel = self.add_weight(shape=(features, 4 * self.units), initializer="glorot_uniform",
                                      name="kernel")  # W (F, 4H)
        self.recurrent_kernel = self.add_weight(shape=(self.recurrent_units, 4 * self.units),
                                                initializer="orthogonal", name="recurrent_kernel")  # U (R, 4H)
        self.bias = self.add_weight(shape=(4 * self.units,), initializer=self.bias_initializer, name="bias")  # b (4H,)
        self.peephole_weights = None
        if self.peepholes:
            # Zero at the start: the cell begins as the plain LSTM and learns to peek.
            self.peephole_weights = Peepholes(*(
                self.add_weight(shape=(self.units,), initializer="zeros", name=f"peephole_{gate}")
                for gate in Peepholes._fields))
        self.projection_weights = None
        if self.projection:
            self.projection_weights = self.add_weight(shape=(self.units, self.projection),
                                                      initializer="glorot_uniform", name="projection")  # P (H, R)

    def call(self, inputs, states, training=False):
        h_prev, c_prev = states  # (B, R), (B, H)
        h, c, _ = lstm_step(inputs, h_prev, c_prev, self.kernel, self.recurrent_kernel, self.bias,
                            self.peephole_weights, self.projection_weights)
        return h, [h, c]  # the output is h_t; the state carried to t+1 is (h_t, c_t)

    def get_config(self):
        config = {**super().get_config(), "units": self.units, "peepholes": self.peepholes,
                  "projection": self.projection}
        if self.bias_initializer is not forget_bias_one:
            config["bias_initializer"] = keras.initializers.serialize(self.bias_initializer)
        return config


def scratch_lstm(units: int, return_sequences: bool = False, peepholes: bool = False, projection: int = 0,
                 name: str | None = None, bias_initializer=None, unroll: bool = False) -> keras.layers.RNN:
    """The hand-written LSTM as a layer: (B, T, F) -> (B, R), or (B, T, R) with return_sequences.

    `keras.layers.RNN` runs the cell in a compiled loop over the timesteps
    (a tf.while_loop inside the compiled training step), as keras.layers.LSTM
    does on a CPU, or written out step by step with `unroll`; it has no fused
    cuDNN kernel, so on a GPU it is slower.
    """
    cell = ScratchLSTMCell(units, peepholes=peepholes, projection=projection, bias_initializer=bias_initializer,
                           name="scratch_lstm_cell")
    return keras.layers.RNN(cell, return_sequences=return_sequences, name=name, unroll=unroll)


@keras.saving.register_keras_serializable(package="lstm_mnist")
class ChronoBias(keras.initializers.Initializer):
    """The chrono initialisation of the bias (Tallec & Ollivier, 2018), for a sequence of T steps.

    On long sequences forget-gate bias 1 is short-sighted: a memory kept with
    f = 0.73 per step is down to 0.73^50 = 1.5e-7 after 50 steps, so at the
    start of training nothing from the first half of a 392-step sequence
    reaches the end. Chrono ("Can recurrent neural networks warp time?")
    gives each unit its own time scale instead:

        forget block:  log(u),  u ~ uniform[1, T - 1], one draw per unit
        input block:   -log(u)
        candidate and output blocks: 0

    With f = sigmoid(log u) = u / (1 + u), unit j keeps its cell state for
    about u_j steps (and writes little into it), so the cell starts with
    memories of every length up to the whole sequence. `--forget-bias-init
    chrono` uses it for Keras's LSTM and for the scratch cell (model.py).
    """

    def __init__(self, timesteps: int, seed=None):
        self.timesteps, self.seed = timesteps, seed
        self.uniform = keras.initializers.RandomUniform(1.0, max(timesteps - 1, 1), seed=seed)

    def __call__(self, shape, dtype=None):
        units = shape[0] // 4
        forget = ops.log(self.uniform((units,), dtype))  # (H,) in [0, log(T - 1)]
        return ops.concatenate([-forget, forget, ops.zeros((2 * units,), dtype)])  # [input | forget | candidate | output]

    def get_config(self):
        return {"timesteps": self.timesteps, "seed": self.seed}
