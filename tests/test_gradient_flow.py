"""The per-timestep gradient that scripts/why_lstm.py draws is the true dL/dx_t."""

import numpy as np
import pytest

from lstm_mnist.bptt import LSTMWeights, classifier_loss_and_gradients
from lstm_mnist.config import IMAGE_PIXELS, Config
from lstm_mnist.data import images_to_sequences
from lstm_mnist.gradient_flow import input_row_gradient_norms
from lstm_mnist.model import build_model


@pytest.mark.parametrize("pixels_per_step", [28, 112], ids=["rows", "T=7"])
def test_row_gradient_norms_match_the_hand_derived_input_gradient(mnist, pixels_per_step):
    """For the package's LSTM classifier, autodiff's per-step norms equal those of bptt.py's dL/dx."""
    x = images_to_sequences(mnist.x_train[:8], pixels_per_step)  # (8, T, F)
    labels = mnist.y_train[:8].astype(np.int32)
    model = build_model(Config(cell="lstm", units=8, pixels_per_step=pixels_per_step))
    norms = input_row_gradient_norms(model, x, labels)
    assert norms.shape == (IMAGE_PIXELS // pixels_per_step,)

    kernel, recurrent_kernel, bias, head_kernel, head_bias = model.get_weights()
    *_, d_x = classifier_loss_and_gradients(x.astype(np.float64), labels, LSTMWeights(kernel, recurrent_kernel, bias),
                                            head_kernel, head_bias)
    # bptt.py differentiates the batch's mean loss; the script wants each image's own loss, i.e. B times that.
    expected = np.linalg.norm(len(x) * d_x, axis=-1).mean(axis=0)  # (B, T, F) -> (T,)
    np.testing.assert_allclose(norms, expected, rtol=1e-4)
    assert norms.min() > 0
