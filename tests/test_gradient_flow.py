"""The per-row gradient that scripts/gradient_flow.py draws is the true dL/dx_t."""

import numpy as np

from lstm_mnist.bptt import LSTMWeights, classifier_loss_and_gradients
from lstm_mnist.config import TIMESTEPS, Config
from lstm_mnist.data import images_to_sequences
from lstm_mnist.gradient_flow import input_row_gradient_norms
from lstm_mnist.model import build_model


def test_row_gradient_norms_match_the_hand_derived_input_gradient(mnist):
    """For the package's LSTM classifier, autodiff's per-row norms equal those of bptt.py's dL/dx."""
    x = images_to_sequences(mnist.x_train[:8])  # (8, T, F)
    labels = mnist.y_train[:8].astype(np.int32)
    model = build_model(Config(cell="lstm", units=8))
    norms = input_row_gradient_norms(model, x, labels)
    assert norms.shape == (TIMESTEPS,)

    kernel, recurrent_kernel, bias, head_kernel, head_bias = model.get_weights()
    *_, d_x = classifier_loss_and_gradients(x.astype(np.float64), labels, LSTMWeights(kernel, recurrent_kernel, bias),
                                            head_kernel, head_bias)
    # bptt.py differentiates the batch's mean loss; the script wants each image's own loss, i.e. B times that.
    expected = np.linalg.norm(len(x) * d_x, axis=-1).mean(axis=0)  # (B, T, F) -> (T,)
    np.testing.assert_allclose(norms, expected, rtol=1e-4)
    assert norms.min() > 0
