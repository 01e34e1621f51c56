"""The model: shapes for every cell type and option, and the classic forget-gate bias."""

import numpy as np
import pytest

from lstm_mnist.config import FEATURES, NUM_CLASSES, TIMESTEPS, Config
from lstm_mnist.model import build_model


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn", "scratch"])
def test_every_cell_maps_two_images_to_two_rows_of_logits(cell):
    model = build_model(Config(cell=cell, units=16))
    x = np.random.default_rng(0).random((2, TIMESTEPS, FEATURES), dtype=np.float32)
    logits = model(x)
    assert tuple(logits.shape) == (2, NUM_CLASSES)


@pytest.mark.parametrize("options", [
    dict(layers=2),
    dict(bidirectional=True),
    dict(input_projection=32),
    dict(layers=3, dropout=0.3, bidirectional=True, input_projection=8),
])
def test_options_keep_the_output_shape(options):
    model = build_model(Config(units=8, **options))
    logits = model(np.zeros((2, TIMESTEPS, FEATURES), np.float32), training=True)
    assert tuple(logits.shape) == (2, NUM_CLASSES)


def test_options_change_the_architecture():
    layers = {layer.name for layer in build_model(Config(units=8, layers=2, bidirectional=True,
                                                         input_projection=8, dropout=0.1)).layers}
    assert {"input_projection", "bidirectional_lstm_1", "bidirectional_lstm_2", "dropout_2", "logits"} <= layers


def test_lstm_forget_gate_bias_starts_at_one():
    """The classic BasicLSTMCell(forget_bias=1.0). Keras orders the gates i, f, c, o."""
    units = 16
    model = build_model(Config(units=units))
    bias = model.get_layer("lstm_1").cell.bias.numpy()  # (4 * units,)
    np.testing.assert_array_equal(bias[units:2 * units], 1.0)  # forget gate
    np.testing.assert_array_equal(bias[:units], 0.0)  # input gate
    np.testing.assert_array_equal(bias[2 * units:], 0.0)  # cell candidate and output gate


def test_defaults_stay_cudnn_eligible():
    """Keras uses the fast cuDNN kernel only with these settings; the defaults must keep them."""
    layer = build_model(Config()).get_layer("lstm_1")
    assert layer.activation.__name__ == "tanh"
    assert layer.recurrent_activation.__name__ == "sigmoid"
    assert layer.recurrent_dropout == 0 and not layer.unroll and layer.use_bias
