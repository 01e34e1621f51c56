"""The hand-written backward pass (bptt.py) gives the true gradients, and they train the LSTM.

Three references, from most trusted outward: `tf.GradientTape` on Keras's own
LSTM, `tf.GradientTape` on our cell (for the peephole and projection options,
which Keras lacks), and finite differences, which assume nothing but the
forward pass. Everything runs in float64 so that a wrong gradient cannot hide
inside float32 rounding: the hand and tape gradients agree to about 1e-15,
far inside the 1e-4 the checks demand.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_mnist.bptt import LSTMWeights, backward, classifier_loss_and_gradients, forward
from lstm_mnist.config import FEATURES, NUM_CLASSES, TIMESTEPS
from lstm_mnist.data import images_to_sequences
from lstm_mnist.lstm_cell import Peepholes, ScratchLSTMCell

UNITS = 16
RELATIVE_TOLERANCE = 1e-4  # the bar for hand vs tape gradients


@pytest.fixture(scope="module")
def digits(mnist):
    """Sixteen real training digits as rows, float64 [16, T, F], and their labels."""
    return images_to_sequences(mnist.x_train[:16]).astype(np.float64), mnist.y_train[:16].astype(np.int64)


def random_weights(rng, features, units, peepholes=False, projection=0, classes=NUM_CLASSES):
    """Random float64 cell and head weights. Not Keras's initial values: the biases and
    peepholes are nonzero too, so every term of every equation affects the result."""
    recurrent = projection or units
    weights = LSTMWeights(
        kernel=rng.normal(0, 0.3, (features, 4 * units)),
        recurrent_kernel=rng.normal(0, 0.3, (recurrent, 4 * units)),
        bias=rng.normal(0, 0.5, (4 * units,)),
        peepholes=Peepholes(*rng.normal(0, 0.5, (3, units))) if peepholes else None,
        projection=rng.normal(0, 0.5, (units, projection)) if projection else None,
    )
    return weights, rng.normal(0, 0.3, (recurrent, classes)), rng.normal(0, 0.3, (classes,))


def flat(weights: LSTMWeights) -> list:
    """The weights in the order a Keras layer lists them: kernel, recurrent_kernel, bias, peepholes, projection."""
    return [weights.kernel, weights.recurrent_kernel, weights.bias, *(weights.peepholes or ()),
            *([] if weights.projection is None else [weights.projection])]


def tape_gradients(layer, x, labels, head_kernel, head_bias):
    """Autodiff's answer: gradients of the classifier's loss for the layer's weights, the head and x."""
    x = tf.constant(x)
    head = [tf.Variable(head_kernel), tf.Variable(head_bias)]
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = layer(x) @ head[0] + head[1]  # (B, T, F) -> (B, R) -> (B, C)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    gradients = tape.gradient(loss, [*layer.trainable_weights, *head, x])
    return float(loss), [np.asarray(gradient) for gradient in gradients]


def assert_same_gradients(hand, tape, names):
    assert len(hand) == len(tape) == len(names)
    for name, got, expected in zip(names, hand, tape):
        assert got.shape == expected.shape, name
        scale = np.abs(expected).max()
        assert scale > 1e-8, f"{name}: the reference gradient is zero, so the comparison would prove nothing"
        relative_error = np.abs(got - expected).max() / scale
        assert relative_error < RELATIVE_TOLERANCE, f"{name}: relative error {relative_error:.2e}"


def assert_bptt_matches_tape(layer, digits, weights, head_kernel, head_bias):
    """Copy `weights` into the built `layer`; hand BPTT and autodiff through it give the same loss and gradients.

    Compared: every LSTM weight (named as the layer names them), the head's
    kernel and bias, and dL/dx for every row.
    """
    x, labels = digits
    layer.set_weights(flat(weights))
    tape_loss, tape = tape_gradients(layer, x, labels, head_kernel, head_bias)

    loss, lstm_gradients, d_head_kernel, d_head_bias, d_x = classifier_loss_and_gradients(
        x, labels, weights, head_kernel, head_bias)
    assert loss == pytest.approx(tape_loss, rel=1e-10)
    names = [weight.path.rsplit("/", 1)[-1] for weight in layer.trainable_weights]
    assert_same_gradients([*flat(lstm_gradients), d_head_kernel, d_head_bias, d_x], tape,
                          [*names, "head_kernel", "head_bias", "x"])


def test_bptt_matches_gradient_tape_on_keras_lstm(digits):
    """Every weight's gradient, and dL/dx for every row, equal autodiff through keras.layers.LSTM."""
    layer = keras.layers.LSTM(UNITS, dtype="float64")
    layer.build((None, TIMESTEPS, FEATURES))
    assert_bptt_matches_tape(layer, digits, *random_weights(np.random.default_rng(0), FEATURES, UNITS))


@pytest.mark.parametrize("peepholes, projection", [(True, 0), (False, 6), (True, 6)],
                         ids=["peepholes", "projection", "peepholes+projection"])
def test_bptt_matches_gradient_tape_on_the_scratch_cell_options(digits, peepholes, projection):
    """Keras has no peepholes or projection, so the reference is autodiff through our own Keras cell."""
    cell = ScratchLSTMCell(UNITS, peepholes=peepholes, projection=projection, dtype="float64")
    layer = keras.layers.RNN(cell, dtype="float64")
    layer.build((None, TIMESTEPS, FEATURES))
    assert_bptt_matches_tape(layer, digits, *random_weights(np.random.default_rng(1), FEATURES, UNITS,
                                                            peepholes=peepholes, projection=projection))


@pytest.mark.parametrize("pixels_per_step", [112, 14], ids=["T=7", "T=56"])
def test_bptt_matches_gradient_tape_at_other_sequence_lengths(mnist, pixels_per_step):
    """--pixels-per-step K: real digits cut into 784 / K steps of K pixels; nothing in the derivation assumes 28."""
    x = images_to_sequences(mnist.x_train[:8], pixels_per_step).astype(np.float64)  # (8, T, K)
    layer = keras.layers.LSTM(UNITS, dtype="float64")
    layer.build((None, *x.shape[1:]))
    assert_bptt_matches_tape(layer, (x, mnist.y_train[:8].astype(np.int64)),
                             *random_weights(np.random.default_rng(4), pixels_per_step, UNITS))


@pytest.mark.parametrize("peepholes, projection", [(False, 0), (True, 2)], ids=["plain", "peepholes+projection"])
def test_bptt_matches_finite_differences_on_a_tiny_cell(peepholes, projection):
    """Nudge every single number up and down by 1e-6 and watch the loss: no autodiff involved.

    The loss reads every h_t, L = sum_t sum_b h_t . probe_t, so the gradient
    entering each timestep from the loss (dh_seq) is exercised, not only the
    last one's.
    """
    rng = np.random.default_rng(2)
    batch, timesteps, features, units = 3, 5, 4, 3
    weights, _, _ = random_weights(rng, features, units, peepholes=peepholes, projection=projection)
    x = rng.normal(0, 1, (batch, timesteps, features))
    probe = rng.normal(0, 1, (batch, timesteps, projection or units))  # dL/dh_t = probe_t

    def loss(weights, x):
        h_seq, _ = forward(x, weights)  # (B, T, R)
        return np.sum(h_seq * probe)

    h_seq, cache = forward(x, weights)
    hand_weights, hand_x = backward(probe, cache)
    arrays, hand = flat(weights) + [x], flat(hand_weights) + [hand_x]
    epsilon = 1e-6
    for array, hand_gradient in zip(arrays, hand):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):  # each entry, nudged in place and restored
            original = array[index]
            array[index] = original + epsilon
            up = loss(weights, x)
            array[index] = original - epsilon
            down = loss(weights, x)
            array[index] = original
            numeric[index] = (up - down) / (2 * epsilon)
        assert np.abs(numeric).max() > 1e-3
        np.testing.assert_allclose(hand_gradient, numeric, rtol=1e-5, atol=1e-8)


def test_hand_gradients_alone_train_the_lstm(digits):
    """Adam driven by nothing but bptt.py's gradients: the loss on a fixed batch falls.

    Only the LSTM's weights are trained (the Dense head stays at its random
    start), so the fall is the work of the backward pass through time.
    """
    x, labels = digits
    weights, head_kernel, head_bias = random_weights(np.random.default_rng(3), FEATURES, UNITS)
    # Keras's starting bias: 0, except 1 for the forget gate's block (blocks input, forget, candidate, output).
    parameters = [weights.kernel, weights.recurrent_kernel, np.repeat([0.0, 1.0, 0.0, 0.0], UNITS)]
    first_moments = [np.zeros_like(p) for p in parameters]
    second_moments = [np.zeros_like(p) for p in parameters]
    learning_rate, beta1, beta2 = 0.05, 0.9, 0.999
    losses = []
    for step in range(1, 41):
        loss, gradients, _, _, _ = classifier_loss_and_gradients(
            x, labels, LSTMWeights(*parameters), head_kernel, head_bias)
        losses.append(loss)
        for k, gradient in enumerate(gradients[:3]):  # Adam (Kingma & Ba, 2015), bias-corrected
            first_moments[k] = beta1 * first_moments[k] + (1 - beta1) * gradient
            second_moments[k] = beta2 * second_moments[k] + (1 - beta2) * gradient**2
            step_direction = (first_moments[k] / (1 - beta1**step)) / (
                np.sqrt(second_moments[k] / (1 - beta2**step)) + 1e-8)
            parameters[k] = parameters[k] - learning_rate * step_direction
    assert losses[-1] < 0.3 * losses[0], [round(loss, 3) for loss in losses]
