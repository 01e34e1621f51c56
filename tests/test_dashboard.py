"""The pieces behind the TensorBoard pictures, each checked against a reference.

- per-gate slices are the kernel's column blocks in Keras's order: input, forget, candidate, output;
- the replayed gate activations rebuild exactly the hidden states Keras's LSTM computes;
- the row-by-row probabilities end in the model's own prediction and never look ahead;
- the confusion matrix matches `tf.math.confusion_matrix`;
- `--no-tensorboard`, `--summary-every-epochs` and `--profile` do what they say.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_mnist.config import FEATURES, NUM_CLASSES, TIMESTEPS, Config
from lstm_mnist.figures import (
    confusion_matrix,
    confusion_matrix_figure,
    misclassified_figure,
    reading_row_by_row_figure,
    sample_inputs_figure,
)
from lstm_mnist.gates import fused_weights, lstm_gate_activations, lstm_layers, model_gate_activations, split_gates
from lstm_mnist.lstm_cell import Gates
from lstm_mnist.model import build_model
from lstm_mnist.reading import can_read_row_by_row, probabilities_after_each_row, settled_row
from lstm_mnist.summaries import histogram_buckets
from lstm_mnist.train import train_and_evaluate


def random_rows(batch=3, seed=0):
    return np.random.default_rng(seed).random((batch, TIMESTEPS, FEATURES), dtype=np.float32)


def trained_looking(model, seed=1):
    """Give every weight random values, so tests do not depend on an initialisation's symmetries."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype(np.float32))
    return model


def test_gate_slices_are_the_kernel_column_blocks():
    keras.utils.set_random_seed(0)
    model = build_model(Config(units=8))
    (lstm,) = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert fused_weights(lstm) == [lstm.cell.kernel, lstm.cell.recurrent_kernel, lstm.cell.bias]
    kernel = lstm.cell.kernel.numpy()  # (F, 4H)
    for number, block in enumerate(split_gates(kernel)):
        np.testing.assert_array_equal(block, kernel[:, number * 8:(number + 1) * 8])
    # unit_forget_bias=True: the forget block of the bias, and only it, starts at 1.
    bias = split_gates(lstm.cell.bias)
    np.testing.assert_array_equal(bias.forget, np.ones(8))
    np.testing.assert_array_equal(bias.input, np.zeros(8))
    np.testing.assert_array_equal(bias.candidate, np.zeros(8))


@pytest.mark.parametrize("go_backwards", [False, True])
def test_replayed_gates_rebuild_kerass_hidden_states(go_backwards):
    """c_t = f*c + i*g and h_t = o*tanh(c_t) from our gates must equal what keras.layers.LSTM outputs."""
    keras.utils.set_random_seed(0)
    layer = keras.layers.LSTM(6, return_sequences=True, go_backwards=go_backwards)
    x = random_rows()
    layer(x)  # builds the weights
    trained_looking(layer)
    reference = keras.ops.convert_to_numpy(layer(x))  # (B, T, H)
    gates = lstm_gate_activations(layer, x)
    assert all(gate.shape == (3, TIMESTEPS, 6) for gate in gates)
    c = np.zeros((3, 6), np.float32)
    hidden = []
    for t in range(TIMESTEPS):
        c = gates.forget[:, t] * c + gates.input[:, t] * gates.candidate[:, t]
        hidden.append(gates.output[:, t] * np.tanh(c))
    np.testing.assert_allclose(np.stack(hidden, axis=1), reference, atol=1e-5)
    assert gates.forget.min() >= 0 and gates.forget.max() <= 1
    assert gates.candidate.min() >= -1 and gates.candidate.max() <= 1


def test_gate_activations_of_stacked_and_bidirectional_models():
    keras.utils.set_random_seed(0)
    model = build_model(Config(units=4, layers=2, bidirectional=True, input_projection=5))
    activations = model_gate_activations(model, random_rows(2))
    assert set(activations) == {f"bidirectional_lstm_{n}/{half}_lstm_{n}" for n in (1, 2)
                                for half in ("forward", "backward")}
    for gates in activations.values():
        assert all(gate.shape == (2, TIMESTEPS, 4) for gate in gates)


@pytest.mark.parametrize("settings", [dict(), dict(layers=2, input_projection=6, dropout=0.2), dict(cell="gru")])
def test_probabilities_after_the_last_row_are_the_models_prediction(settings):
    keras.utils.set_random_seed(0)
    model = trained_looking(build_model(Config(units=8, **settings)))
    x = random_rows()
    probabilities = probabilities_after_each_row(model, x)
    assert probabilities.shape == (3, TIMESTEPS, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(x, training=False)))  # (B, 10)
    np.testing.assert_allclose(probabilities[:, -1], expected, atol=1e-5)


def test_the_answer_after_row_t_never_looks_at_later_rows():
    keras.utils.set_random_seed(0)
    model = trained_looking(build_model(Config(units=8)))
    x = random_rows(2)
    changed = x.copy()
    changed[:, 10:] = 1.0 - changed[:, 10:]  # rewrite rows 10..27
    before, after = probabilities_after_each_row(model, x), probabilities_after_each_row(model, changed)
    np.testing.assert_allclose(before[:, :10], after[:, :10], atol=1e-6)
    assert not np.allclose(before[:, 10:], after[:, 10:])


def test_a_bidirectional_model_is_not_read_row_by_row():
    model = build_model(Config(units=4, bidirectional=True))
    assert not can_read_row_by_row(model)
    with pytest.raises(ValueError, match="bidirectional"):
        probabilities_after_each_row(model, random_rows(1))


def test_settled_row():
    def one_hot(answers):
        return np.eye(NUM_CLASSES)[answers]  # (T,) -> (T, 10)

    assert settled_row(one_hot([3] * TIMESTEPS)) == 0
    assert settled_row(one_hot([1] * 20 + [7] * 8)) == 20
    assert settled_row(one_hot([7] * 5 + [1] * 10 + [7] * 13)) == 15
    assert settled_row(one_hot([7] * 27 + [1])) == 27


def test_confusion_matrix_matches_tensorflow():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, NUM_CLASSES, 500), rng.integers(0, NUM_CLASSES, 500)
    counts = confusion_matrix(labels, predictions)
    np.testing.assert_array_equal(counts, tf.math.confusion_matrix(labels, predictions, NUM_CLASSES).numpy())
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(labels, minlength=NUM_CLASSES))
    with pytest.raises(ValueError):
        confusion_matrix(labels, predictions[:-1])


def test_figures_are_rgb_pictures():
    rng = np.random.default_rng(0)
    images, labels = rng.random((6, TIMESTEPS, FEATURES)), rng.integers(0, NUM_CLASSES, 6)
    probabilities = rng.dirichlet(np.ones(NUM_CLASSES), size=(6, TIMESTEPS))
    pictures = [
        sample_inputs_figure(images, labels),
        confusion_matrix_figure(confusion_matrix(labels, labels[::-1]), "title"),
        misclassified_figure(images[:3], labels[:3], labels[::-1][:3]),
        reading_row_by_row_figure(images, labels, probabilities, [settled_row(p) for p in probabilities]),
    ]
    for picture in pictures:
        assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
        assert picture.std() > 0  # something was drawn


def small_config(log_dir, **overrides):
    settings = dict(epochs=3, train_examples=128, val_size=64, test_examples=64, batch_size=64, units=8,
                    log_every_steps=1, log_dir=str(log_dir))
    return Config(**{**settings, **overrides})


def test_no_tensorboard_writes_no_event_files(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-home"))
    result = train_and_evaluate(small_config(tmp_path, epochs=1, tensorboard=False), log=lambda line: None,
                                cache_dir=cache_dir)
    assert not list(result.run_dir.rglob("events.out.tfevents.*"))
    assert (result.run_dir / "metrics.json").is_file()


def test_expensive_summaries_every_n_epochs_and_profile_without_plugin(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-home"))
    lines = []
    result = train_and_evaluate(small_config(tmp_path, summary_every_epochs=2, profile=True), log=lines.append,
                                cache_dir=cache_dir)
    train = EventAccumulator(str(result.run_dir / "train"), size_guidance={"tensors": 0})
    train.Reload()
    # 2 steps per epoch: every 2nd epoch (step 4) and the last (step 6); scalars every epoch.
    assert [event.step for event in train.Tensors("weights/lstm_1/lstm_cell/kernel")] == [4, 6]
    assert [event.step for event in train.Tensors("epoch/loss")] == [2, 4, 6]
    validation = EventAccumulator(str(result.run_dir / "validation"), size_guidance={"tensors": 0})
    validation.Reload()
    assert [event.step for event in validation.Tensors("validation/confusion_matrix")] == [4, 6]
    try:
        import tensorboard_plugin_profile  # noqa: F401
    except ImportError:
        assert any("pip install tensorboard-plugin-profile" in line for line in lines), lines
    else:
        assert list((result.run_dir / "plugins" / "profile").rglob("*.xplane.pb"))


@pytest.mark.parametrize("values", [np.random.default_rng(0).normal(size=(64, 28, 16)), np.arange(100.0),
                                    np.full(7, 0.25), np.zeros(0)])
def test_histogram_buckets_match_tensorboards_own(values):
    from tensorboard.plugins.histogram.summary_v2 import _buckets  # the reference implementation

    reference = _buckets(tf.constant(values), bucket_count=30).numpy()  # (30, 3)
    ours = histogram_buckets(values)
    np.testing.assert_allclose(ours[:, :2], reference[:, :2], rtol=1e-12, atol=1e-12)  # edges
    np.testing.assert_array_equal(ours[:, 2], reference[:, 2])  # counts


def test_the_hand_written_cell_gets_the_same_gate_pictures():
    """--cell scratch: the same weights in a Keras LSTM and in lstm_cell.py's cell give the same gates and reading."""
    keras.utils.set_random_seed(0)
    keras_model = trained_looking(build_model(Config(units=6)))
    scratch_model = build_model(Config(units=6, cell="scratch"))
    scratch_model.set_weights(keras_model.get_weights())  # same shapes, same order
    x = random_rows(2)
    (keras_lstm,), (scratch_lstm,) = lstm_layers(keras_model), lstm_layers(scratch_model)
    for scratch_gate, keras_gate in zip(lstm_gate_activations(scratch_lstm, x), lstm_gate_activations(keras_lstm, x)):
        np.testing.assert_allclose(scratch_gate, keras_gate, atol=1e-6)
    assert fused_weights(scratch_lstm) == scratch_lstm.cell.weights
    np.testing.assert_allclose(probabilities_after_each_row(scratch_model, x),
                               probabilities_after_each_row(keras_model, x), atol=1e-5)
