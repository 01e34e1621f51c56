"""Backpropagation through time (BPTT) for the LSTM, derived and written by hand in NumPy.

No autodiff anywhere: `backward` applies the chain rule to equations (1)-(8)
of `lstm_cell.py`, one timestep at a time from the last row back to the
first. `tests/test_bptt.py` checks every gradient it returns against
`tf.GradientTape` and against finite differences.

The forward pass (`forward`) is `lstm_cell.lstm_forward`, plus a cache of
what the backward pass needs: the inputs x_t, the previous states h_{t-1}
and c_{t-1}, the new cell state c_t and the four gate activations.

**The derivation in short.** Write dv for dL/dv, the gradient of the loss
with respect to v. Step t of the forward pass used h_{t-1} and c_{t-1} and
produced h_t and c_t, so going backwards, step t receives dh_t and dc_t and
hands dh_{t-1} and dc_{t-1} to step t-1. Undoing the equations in reverse:

    dh_t  = (dL/dh_t from the loss, if it reads h_t) + (dh_t handed back by step t+1)
    (8)  dm_t = dh_t P^T,                 dP += m_t^T dh_t            (without P: dm_t = dh_t)
    (7)  do_t = dm_t * tanh(c_t),         dc_t += dm_t * o_t * (1 - tanh(c_t)^2)
    (6)  dz_o = do_t * o_t (1 - o_t),     dc_t += dz_o * p_o,         dp_o += sum_b dz_o * c_t
    (5)  di_t = dc_t * g_t,  dg_t = dc_t * i_t,  df_t = dc_t * c_{t-1},  dc_{t-1} = dc_t * f_t
    (4)  dz_g = dg_t * (1 - g_t^2)
    (3)  dz_f = df_t * f_t (1 - f_t),     dc_{t-1} += dz_f * p_f,     dp_f += sum_b dz_f * c_{t-1}
    (2)  dz_i = di_t * i_t (1 - i_t),     dc_{t-1} += dz_i * p_i,     dp_i += sum_b dz_i * c_{t-1}
    (1)  dz_t = [dz_i, dz_f, dz_g, dz_o]  (B, 4H), and because z_t = x_t W + h_{t-1} U + b:
         dW += x_t^T dz_t,  dU += h_{t-1}^T dz_t,  db += sum_b dz_t,
         dx_t = dz_t W^T,   dh_{t-1} = dz_t U^T

The sigmoid's derivative is s (1 - s) and tanh's is 1 - tanh^2, both
written in terms of the activations the forward pass kept. Three things to
notice:

* **Shared weights sum.** W, U, b (and P, p) are the same at every
  timestep, so their gradients are sums (`+=`) over t of each step's share.
* **The cell-state path.** dc_{t-1} = dc_t * f_t (+ small peephole terms):
  going back one row multiplies the gradient by the forget gate only, with
  no weight matrix and no squashing derivative in between. With f_t near 1
  the gradient reaches early rows almost intact; a plain RNN's gradient is
  multiplied by U^T and tanh' at every step and shrinks (see
  `scripts/why_lstm.py` and its gradient-flow figure).
* **Two ways back.** The gradient reaches step t-1 both through c (above)
  and through h (dh_{t-1} = dz_t U^T), which is why both are carried.

Shapes, in lstm_cell.py's letters: B batch, T timesteps, F features,
H units, R width of h_t (R = H without a projection). Arrays are indexed
from t = 0 (the first row); the docstring's h_{t-1} for the first row is
the zero initial state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lstm_mnist.lstm_cell import Gates, Peepholes, lstm_forward


class LSTMWeights(NamedTuple):
    """The cell's weights, laid out as in lstm_cell.py; gradients come back in the same structure.

    kernel W (F, 4H), recurrent_kernel U (R, 4H), bias b (4H,), each 4H wide in the gate order
    input, forget, candidate, output;
    peepholes: Peepholes of three (H,) or None; projection P (H, R) or None.
    """

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray
    peepholes: Peepholes | None = None
    projection: np.ndarray | None = None


class ForwardCache(NamedTuple):
    """What `backward` needs from the forward pass; every sequence is indexed [:, t]."""

    weights: LSTMWeights
    x: np.ndarray  # (B, T, F)   x_t
    h_prev: np.ndarray  # (B, T, R)   h_{t-1}, zero at t = 0
    c_prev: np.ndarray  # (B, T, H)   c_{t-1}, zero at t = 0
    c: np.ndarray  # (B, T, H)   c_t
    gates: Gates  # each (B, T, H): i_t, f_t, g_t, o_t


def shift_right(sequence: np.ndarray) -> np.ndarray:
    """[s_0, ..., s_{T-1}] -> [0, s_0, ..., s_{T-2}] along axis 1: the state each step started from."""
    return np.concatenate([np.zeros_like(sequence[:, :1]), sequence[:, :-1]], axis=1)  # (B, T, n)


def as_arrays(weights: LSTMWeights, dtype) -> LSTMWeights:
    """The weights as NumPy arrays of one dtype (they may arrive as Keras variables)."""

    def convert(weight):
        return None if weight is None else np.asarray(weight, dtype)

    peepholes = None if weights.peepholes is None else Peepholes(*map(convert, weights.peepholes))
    return LSTMWeights(convert(weights.kernel), convert(weights.recurrent_kernel), convert(weights.bias),
                       peepholes, convert(weights.projection))


def forward(x: np.ndarray, weights: LSTMWeights) -> tuple[np.ndarray, ForwardCache]:
    """Run the LSTM over x (float [B, T, F]) and keep what the backward pass needs.

    Returns h_seq [B, T, R] (every hidden state) and the ForwardCache.
    Computed in x's dtype; use float64 for gradient checks.
    """
    x = np.asarray(x)
    weights = as_arrays(weights, x.dtype)
    h_seq, c_seq, gates = lstm_forward(x, *weights)
    return h_seq, ForwardCache(weights, x, shift_right(h_seq), shift_right(c_seq), c_seq, gates)


def backward(dh_seq: np.ndarray, cache: ForwardCache) -> tuple[LSTMWeights, np.ndarray]:
    """Backpropagate dL/dh_t (float [B, T, R], one slice per timestep) through time.

    dh_seq[:, t] is how the loss depends on h_t directly; for a classifier
    that reads only the last state it is zero except at t = T-1.
    Returns the gradients of every weight, as an LSTMWeights, and dL/dx
    [B, T, F], the gradient with respect to each input row.
    """
    weights, x, gates = cache.weights, cache.x, cache.gates
    kernel, recurrent_kernel, bias, peepholes, projection = weights
    batch, timesteps, _ = x.shape
    d_kernel, d_recurrent_kernel, d_bias = (np.zeros_like(w) for w in (kernel, recurrent_kernel, bias))
    d_peepholes = None if peepholes is None else Peepholes(*(np.zeros_like(p) for p in peepholes))
    d_projection = None if projection is None else np.zeros_like(projection)
    d_x = np.zeros_like(x)
    dh_next = np.zeros_like(cache.h_prev[:, 0])  # dL/dh_t handed back by step t+1, (B, R); none after the last
    dc_next = np.zeros_like(cache.c[:, 0])  # dL/dc_t handed back by step t+1, (B, H)

    for t in reversed(range(timesteps)):
        i, f, g, o = (gate[:, t] for gate in gates)  # each (B, H)
        c, c_prev, h_prev = cache.c[:, t], cache.c_prev[:, t], cache.h_prev[:, t]
        tanh_c = np.tanh(c)
        dh = dh_seq[:, t] + dh_next  # from the loss directly, and back from step t+1, (B, R)
        dm = dh if projection is None else dh @ projection.T  # (8) (B, R) @ (R, H) -> (B, H)
        if projection is not None:
            d_projection += (o * tanh_c).T @ dh  # (8) m_t^T dh_t: (H, B) @ (B, R) -> (H, R)
        do = dm * tanh_c  # (7)
        dc = dc_next + dm * o * (1 - tanh_c**2)  # (7), plus what step t+1 sent back
        dz_o = do * o * (1 - o)  # (6)
        if peepholes is not None:
            dc += dz_o * peepholes.output  # (6) the output gate peeked at c_t
        di, dg, df = dc * g, dc * i, dc * c_prev  # (5)
        dz_g = dg * (1 - g**2)  # (4)
        dz_f = df * f * (1 - f)  # (3)
        dz_i = di * i * (1 - i)  # (2)
        dc_next = dc * f  # (5) the cell-state path: back one row through the forget gate
        if peepholes is not None:
            dc_next += dz_i * peepholes.input + dz_f * peepholes.forget  # (2), (3) the gates peeked at c_{t-1}
            d_peepholes.input[...] += np.sum(dz_i * c_prev, axis=0)  # (2) (B, H) -> (H,), summed over t
            d_peepholes.forget[...] += np.sum(dz_f * c_prev, axis=0)  # (3)
            d_peepholes.output[...] += np.sum(dz_o * c, axis=0)  # (6)
        dz = np.concatenate([dz_i, dz_f, dz_g, dz_o], axis=-1)  # (1) 4 x (B, H) -> (B, 4H), gate order i, f, g, o
        d_kernel += x[:, t].T @ dz  # (1) (F, B) @ (B, 4H) -> (F, 4H), summed over t
        d_recurrent_kernel += h_prev.T @ dz  # (1) (R, B) @ (B, 4H) -> (R, 4H), summed over t
        d_bias += np.sum(dz, axis=0)  # (1) (B, 4H) -> (4H,), summed over t
        d_x[:, t] = dz @ kernel.T  # (1) (B, 4H) @ (4H, F) -> (B, F)
        dh_next = dz @ recurrent_kernel.T  # (1) (B, 4H) @ (4H, R) -> (B, R): to step t-1 through h

    return LSTMWeights(d_kernel, d_recurrent_kernel, d_bias, d_peepholes, d_projection), d_x


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of logits [B, C] against integer labels [B], and its gradient [B, C].

    d(loss)/d(logits) = (softmax(logits) - one_hot(labels)) / B.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)  # the same softmax, without overflow
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (B, C)
    batch = len(labels)
    loss = -log_probabilities[np.arange(batch), labels].mean()
    d_logits = np.exp(log_probabilities)  # softmax, (B, C)
    d_logits[np.arange(batch), labels] -= 1.0
    return float(loss), d_logits / batch


def classifier_loss_and_gradients(x: np.ndarray, labels: np.ndarray, weights: LSTMWeights,
                                  head_kernel: np.ndarray, head_bias: np.ndarray):
    """The whole classifier by hand: LSTM -> last hidden state -> Dense logits -> cross-entropy.

    x float [B, T, F], labels int [B]; head_kernel (R, C), head_bias (C,).
    Returns (loss, LSTMWeights of gradients, d_head_kernel, d_head_bias, d_x).
    """
    h_seq, cache = forward(x, weights)  # (B, T, R)
    head_kernel, head_bias = np.asarray(head_kernel, x.dtype), np.asarray(head_bias, x.dtype)
    h_last = h_seq[:, -1]  # the classifier reads only the last row's state, (B, R)
    loss, d_logits = softmax_cross_entropy(h_last @ head_kernel + head_bias, labels)  # (B, C)
    dh_seq = np.zeros_like(h_seq)
    dh_seq[:, -1] = d_logits @ head_kernel.T  # (B, C) @ (C, R) -> (B, R); earlier h_t reach the loss only via h_T
    lstm_gradients, d_x = backward(dh_seq, cache)
    return loss, lstm_gradients, h_last.T @ d_logits, d_logits.sum(axis=0), d_x
