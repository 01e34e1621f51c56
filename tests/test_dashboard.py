"""The pieces behind the TensorBoard pictures, each checked against a reference.

- per-gate slices are the kernel's column blocks in Keras's order: input, forget, candidate, output;
- the replayed gate activations rebuild exactly the hidden states Keras's LSTM computes;
- the row-by-row probabilities end in the model's own prediction and never look ahead;
- the confusion matrix matches `tf.math.confusion_matrix`;
- `--no-tensorboard`, `--summary-every-epochs`, `--profile` and `--val-size 0` do what they say;
- the gradient histograms are of the loss on the first 128 training digits (checked against Keras);
- on resume, event files are trimmed to the checkpoint: a cut-off last record is dropped, a file
  damaged inside is kept as it is with one line, and no symlink is ever followed.
"""

import os
import struct
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util.tensor_util import make_ndarray

from lstm_mnist import figures
from lstm_mnist.config import CELL_TYPES, FEATURES, NUM_CLASSES, TIMESTEPS, Config
from lstm_mnist.dashboard import Dashboard, trim_events_after
from lstm_mnist.data import Splits
from lstm_mnist.figures import (
    confusion_matrix,
    confusion_matrix_figure,
    misclassified_figure,
    reading_row_by_row_figure,
    sample_inputs_figure,
)
from lstm_mnist.gates import fused_weights, lstm_gate_activations, lstm_layers, model_gate_activations, split_gates
from lstm_mnist.model import build_model
from lstm_mnist.reading import can_read_row_by_row, probabilities_after_each_row, settled_row
from lstm_mnist.summaries import (
    HPARAMS_FIRST,
    NOT_HYPERPARAMETERS,
    SummaryWriteError,
    hparam_columns,
    histogram_buckets,
)
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


@pytest.mark.parametrize("settings", [dict(), dict(layers=2, input_projection=6, dropout=0.2), dict(cell="gru"),
                                      dict(cell="scratch", peepholes=True, recurrent_projection=4)])
def test_probabilities_after_the_last_row_are_the_models_prediction(settings):
    """An LSTM's rows are replayed by lstm_cell.lstm_forward, a GRU's stepped by Keras: both end at the model's answer."""
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
        # TensorBoard shows an image WIDTH pixels wide by default: a wider one is shrunk, and its text with it.
        assert picture.shape[1] == figures.WIDTH, picture.shape


@pytest.fixture
def written(monkeypatch):
    """Every piece of text the figures draw, in order (figures.write and write_upwards still draw it)."""
    texts = []
    draw_line, draw_upwards = figures.write, figures.write_upwards
    monkeypatch.setattr(figures, "write", lambda draw, xy, text, *args, **kwargs:
                        texts.append(text) or draw_line(draw, xy, text, *args, **kwargs))
    monkeypatch.setattr(figures, "write_upwards", lambda picture, centre, text, *args, **kwargs:
                        texts.append(text) or draw_upwards(picture, centre, text, *args, **kwargs))
    return texts


def test_the_reading_figure_numbers_its_rows_and_says_what_each_digit_is(written):
    rng = np.random.default_rng(0)
    images, labels = rng.random((2, TIMESTEPS, FEATURES)), np.array([1, 3])
    probabilities = np.zeros((2, TIMESTEPS, NUM_CLASSES))
    probabilities[0, :, 1] = probabilities[1, :20, 3] = probabilities[1, 20:, 8] = 1.0  # the 3 ends up read as 8
    reading_row_by_row_figure(images, labels, probabilities, [0, 20])
    assert figures.row_ticks(TIMESTEPS) == [0, 7, 14, 21, 27]
    rows = [str(row) for row in figures.row_ticks(TIMESTEPS)]
    assert written.count("27") == 2 and all(written.count(row) >= 2 for row in rows)  # an axis beside each digit
    assert {"true 1, answer 1", "true 3, answer 8", "settled at row 20 (white line)"} <= set(written)
    assert all(written.count(str(digit)) >= 2 for digit in range(NUM_CLASSES))  # the columns of each strip
    assert not [text for text in written if "says" in text]


def test_the_confusion_matrix_has_labelled_axes_and_every_count_in_its_cell(written):
    counts = np.diag(np.arange(100, 110))
    counts[4, 9] = 13
    confusion_matrix_figure(counts, "validation, step 3\n13 wrong")
    assert {"predicted digit", "true digit", "validation, step 3", "13 wrong", "13"} <= set(written)
    assert all(str(count) in written for count in range(100, 110))
    assert all(written.count(str(digit)) == 2 for digit in range(NUM_CLASSES))  # the ticks: rows and columns


def test_the_timesteps_are_separated_by_lines_and_numbered(written):
    blank = np.zeros((6, TIMESTEPS, FEATURES), np.float32)  # white paper: only the lines are coloured
    picture = sample_inputs_figure(blank, np.arange(6), columns=3)
    full_lines = np.all(picture == figures.BOUNDARY, axis=2).sum(axis=1) == 3 * FEATURES * figures.SCALE
    assert full_lines.sum() == 2 * (TIMESTEPS - 1)  # two lines of three digits, a line between each two rows
    assert written.count("27") == 2 and {f"label {digit}" for digit in range(6)} <= set(written)


def test_the_misclassified_digits_are_labelled_true_then_answer(written):
    misclassified_figure(np.zeros((3, TIMESTEPS, FEATURES)), np.array([4, 7, 9]), np.array([9, 1, 4]))
    assert ["4 \u2192 9", "7 \u2192 1", "9 \u2192 4"] == [text for text in written if "\u2192" in text][1:]


def test_hparams_columns_come_in_the_order_tensorboard_shows_them():
    """TensorBoard sorts the HPARAMS settings by name and shows the first five: the names must sort as ranked."""
    config = Config().to_dict()
    columns = hparam_columns(config)
    shown = [column.display_name for column in sorted(columns, key=lambda column: column.name)]
    assert shown[:5] == ["cell", "units", "layers", "epochs", "learning_rate"]
    assert shown[:len(HPARAMS_FIRST)] == list(HPARAMS_FIRST)
    assert set(shown) == set(config) - set(NOT_HYPERPARAMETERS)  # every other setting follows
    (cell,) = [column for column in columns if column.display_name == "cell"]
    assert cell.domain.values == sorted(CELL_TYPES) and cell.description.startswith("recurrent cell")
    # Every setting has a domain, so the tab knows its type and offers a filter (a number: a min/max box).
    domains = {column.display_name: column.domain for column in columns}
    assert all(domain is not None for domain in domains.values()), domains
    assert (domains["units"].min_value, domains["units"].max_value) == (1, 16_384)
    assert domains["learning_rate"].min_value == 0.0 and domains["deterministic"].values == [False, True]


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
    # 2 steps per epoch: the initial weights (step 0), every 2nd epoch (step 4) and the last (step 6);
    # the gradients from the first training step on; scalars every epoch.
    assert [event.step for event in train.Tensors("weights/lstm_1/lstm_cell/kernel")] == [0, 4, 6]
    assert [event.step for event in train.Tensors("gradients/lstm_1/lstm_cell/kernel")] == [4, 6]
    initial_forget_bias = make_ndarray(train.Tensors("weights_by_gate/lstm_1/lstm_cell/bias/forget")[0].tensor_proto)
    filled = initial_forget_bias[initial_forget_bias[:, 2] > 0]  # (buckets, 3): left edge, right edge, count
    assert filled[:, 2].sum() == 8 and filled[:, 0].min() >= 1 - 1e-6 and filled[:, 1].max() <= 1 + 1e-6
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


def test_a_histogram_leaves_out_values_that_are_not_finite():
    """The gradients of a loss-scaled step that overflowed (--mixed-precision) are inf: the finite ones are counted."""
    values = np.array([np.inf, -np.inf, np.nan, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(histogram_buckets(values), histogram_buckets(values[3:]))
    assert histogram_buckets(values[3:])[:, 2].sum() == 3
    assert histogram_buckets(np.array([np.nan, np.inf]))[:, 2].sum() == 0


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


def test_without_a_validation_set_nothing_is_written_for_it_and_the_step_gradients_are_histogrammed(tmp_path):
    """The hooks on their own: validation None (--val-size 0); the gradients handed in are the ones written."""
    keras.utils.set_random_seed(0)
    config = Config(units=8, epochs=1, val_size=0, log_dir=str(tmp_path))
    model = trained_looking(build_model(config))
    x_train = random_rows(200)
    y_train = np.arange(200, dtype=np.int32) % NUM_CLASSES
    no_images = np.zeros((0, TIMESTEPS, FEATURES), np.float32)
    splits = Splits(train_images=np.round(x_train * 255).astype(np.uint8), y_train=y_train, x_val=no_images,
                    y_val=np.zeros(0, np.int32), x_test=x_train[:50], y_test=y_train[:50])
    # A training step's gradients, as train_step returns them (one per weight, in model.trainable_variables' order).
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y_train[:128], model(x_train[:128]))
    gradients = tape.gradient(loss, model.trainable_variables)
    run_dir = tmp_path / "run"
    with Dashboard(run_dir, config, model, splits, log=lambda line: None) as dashboard:
        dashboard.start_of_run("the model summary")
        dashboard.end_of_epoch(1, 2, {"loss": 2.3, "accuracy": 0.1}, None, np.zeros(0, np.int64), gradients)
        dashboard.end_of_run(2, {"loss": 2.2, "accuracy": 0.2})
    assert sorted(path.name for path in run_dir.iterdir() if path.is_dir()) == ["test", "train"]  # no validation/
    train = EventAccumulator(str(run_dir / "train"), size_guidance={"tensors": 0})
    train.Reload()
    assert {"epoch/loss", "inputs/as_timesteps", "gradients_by_gate/lstm_1/lstm_cell/kernel/candidate"} \
        <= set(train.Tags()["tensors"])
    expected = gradients[[v.path for v in model.trainable_variables].index("lstm_1/lstm_cell/kernel")].numpy()
    (event,) = train.Tensors("gradients/lstm_1/lstm_cell/kernel")
    buckets = tf.make_ndarray(event.tensor_proto)  # (30, 3): left, right, count
    np.testing.assert_allclose([buckets[0, 0], buckets[-1, 1]], [expected.min(), expected.max()], rtol=1e-4)
    assert buckets[:, 2].sum() == expected.size


# --- Trimming event files on resume -------------------------------------------------------------

def write_events(folder, steps):
    """A real event file in `folder` with one scalar at each step; returns its path."""
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for step in steps:
            tf.summary.scalar("epoch/loss", float(step), step=step)
    writer.close()
    (path,) = folder.glob("events.out.tfevents.*")
    return path


def summary_steps(path):
    return [event.step for event in EventFileLoader(str(path)).Load() if event.HasField("summary")]


def record_starts(data: bytes) -> list[int]:
    """Where each record of a TFRecord file begins: [8-byte length][4-byte CRC][data][4-byte CRC]."""
    starts, position = [], 0
    while position < len(data):
        starts.append(position)
        position += 16 + struct.unpack("<Q", data[position:position + 8])[0]
    return starts


def test_trimming_removes_events_past_the_checkpoint_and_a_cut_off_last_record(tmp_path):
    run = tmp_path / "run"
    train = write_events(run / "train", range(1, 11))
    validation = write_events(run / "validation", range(2, 11, 2))
    validation.write_bytes(validation.read_bytes()[:-10])  # a writer killed in the middle of the step-10 record
    test = write_events(run / "test", [1, 2, 3])  # cut off too, but with no complete event past step 6
    whole = test.read_bytes()
    test.write_bytes(whole[:-10])
    stale = run / "train" / f".{train.name}.99999.tmp"  # the temporary file of a trim killed before its rename
    stale.write_bytes(b"half an event file")
    lines = []
    assert trim_events_after(run, 6, lines.append) == 4 + 1  # steps 7-10 of train, step 8 of validation
    assert summary_steps(train) == [1, 2, 3, 4, 5, 6]
    assert summary_steps(validation) == [2, 4, 6]
    assert test.read_bytes() == whole[:record_starts(whole)[-1]]  # the complete records, byte for byte
    assert not stale.exists() and not list(run.rglob(".*"))
    assert lines == []
    before = train.read_bytes()
    assert trim_events_after(run, 6, lines.append) == 0 and train.read_bytes() == before  # nothing left to trim


@pytest.mark.parametrize("where", ["data", "length"])
def test_a_file_damaged_inside_is_kept_as_it_is_with_one_line(tmp_path, where):
    run = tmp_path / "run"
    train = write_events(run / "train", range(1, 11))
    validation = write_events(run / "validation", range(1, 11))
    data = bytearray(train.read_bytes())
    fourth = record_starts(bytes(data))[4]  # record 0 is the file-version event; 4 is the step-4 scalar
    data[fourth + (14 if where == "data" else 2)] ^= 0xFF  # a flipped bit in the record's data, or in its length
    train.write_bytes(bytes(data))
    lines = []
    assert trim_events_after(run, 6, lines.append) == 4  # the intact file is still trimmed
    assert train.read_bytes() == bytes(data)  # never cut short
    assert summary_steps(validation) == [1, 2, 3, 4, 5, 6]
    (line,) = lines
    assert f"{train} is damaged at byte {fourth}" in line and "kept as it is" in line and "\n" not in line


@pytest.mark.parametrize("planted", ["events file", "rewrite file", "event folder"])
def test_trimming_never_follows_a_symlink(tmp_path, planted):
    run, outside = tmp_path / "run", tmp_path / "outside"
    target = write_events(outside, range(1, 11))
    original = target.read_bytes()
    if planted == "events file":
        (run / "train").mkdir(parents=True)
        (run / "train" / target.name).symlink_to(target)
    elif planted == "rewrite file":
        train = write_events(run / "train", range(1, 11))
        (run / "train" / f".{train.name}.{os.getpid()}.tmp").symlink_to(target)
    else:
        run.mkdir()
        (run / "validation").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SummaryWriteError, match="symbolic link") as refused:
        trim_events_after(run, 6, lambda line: None)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    assert target.read_bytes() == original


def test_the_histogram_benchmark_runs():
    """scripts/benchmark_histograms.py backs summaries.py's measured comment; a tiny run keeps it from rotting."""
    script = Path(__file__).parent.parent / "scripts" / "benchmark_histograms.py"
    result = subprocess.run([sys.executable, str(script), "--repeats", "1", "--units", "4", "--digits", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("tf / NumPy") == 2, result.stdout
