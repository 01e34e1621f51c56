"""The hand-written LSTM is Keras's LSTM: same outputs at every timestep, same gradients.

Each test copies the weights of a `keras.layers.LSTM` (the trusted reference)
into our cell and runs both on the same batch of real digits. The weights,
biases included, are random rather than freshly initialised, so that every
gate (not just the forget gate with its bias of 1) matters to the result.
"""

import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_mnist.config import FEATURES, TIMESTEPS, Config
from lstm_mnist.data import images_to_sequences
from lstm_mnist.lstm_cell import Peepholes, lstm_forward, scratch_lstm
from lstm_mnist.model import build_model

UNITS = 32
TOLERANCE = 1e-5  # float32: both compute the same sums, in a possibly different order


@pytest.fixture(scope="module")
def digits(mnist):
    """Sixteen real test digits as rows, float32 [16, T, F], and their labels."""
    return images_to_sequences(mnist.x_test[:16]), mnist.y_test[:16].astype(np.int32)


def random_lstm_weights(rng, features=FEATURES, units=UNITS, recurrent=UNITS):
    """kernel (F, 4H), recurrent_kernel (R, 4H), bias (4H,): random, float32."""
    return [rng.normal(0, 0.3, (features, 4 * units)).astype(np.float32),
            rng.normal(0, 0.3, (recurrent, 4 * units)).astype(np.float32),
            rng.normal(0, 0.5, (4 * units,)).astype(np.float32)]


def keras_lstm(weights, return_sequences=True):
    layer = keras.layers.LSTM(UNITS, return_sequences=return_sequences)
    layer.build((None, TIMESTEPS, FEATURES))
    layer.set_weights(weights)
    return layer


def keras_lstm_step_by_step(x, weights):
    """Every h_t and c_t of Keras's own LSTMCell, called once per row: [B, T, H] each."""
    cell = keras.layers.LSTMCell(UNITS)
    cell.build((None, FEATURES))
    cell.set_weights(weights)
    h = c = np.zeros((len(x), UNITS), np.float32)
    hs, cs = [], []
    for t in range(TIMESTEPS):
        _, (h, c) = cell(x[:, t], [h, c])
        hs.append(np.asarray(h))
        cs.append(np.asarray(c))
    return np.stack(hs, axis=1), np.stack(cs, axis=1)


def test_scratch_layer_matches_keras_lstm_at_every_timestep(digits):
    x, _ = digits
    weights = random_lstm_weights(np.random.default_rng(0))
    ours = scratch_lstm(UNITS, return_sequences=True)
    ours.build((None, TIMESTEPS, FEATURES))
    ours.set_weights(weights)  # same names, shapes and gate order: the weights copy unchanged
    expected = np.asarray(keras_lstm(weights)(x))  # (B, T, H)
    got = np.asarray(ours(x))
    assert got.shape == expected.shape == (len(x), TIMESTEPS, UNITS)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    assert np.abs(expected).max() > 0.1  # the states are far from zero, so the comparison means something


@pytest.mark.parametrize("pixels_per_step", [112, 14], ids=["T=7", "T=56"])
def test_scratch_layer_matches_keras_lstm_at_other_sequence_lengths(mnist, pixels_per_step):
    """--pixels-per-step K: the same agreement on [B, 784 / K, K] sequences, at every timestep."""
    x = images_to_sequences(mnist.x_test[:8], pixels_per_step)  # (8, T, K)
    weights = random_lstm_weights(np.random.default_rng(5), features=pixels_per_step)
    reference = keras.layers.LSTM(UNITS, return_sequences=True)
    ours = scratch_lstm(UNITS, return_sequences=True)
    for layer in (reference, ours):
        layer.build((None, *x.shape[1:]))
        layer.set_weights(weights)
    expected = np.asarray(reference(x))  # (B, T, H)
    np.testing.assert_allclose(np.asarray(ours(x)), expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(lstm_forward(x, *weights)[0], expected, atol=TOLERANCE, rtol=0)
    assert expected.shape == (8, x.shape[1], UNITS) and np.abs(expected).max() > 0.1


def test_lstm_forward_matches_keras_hidden_and_cell_state_at_every_timestep(digits):
    x, _ = digits
    weights = random_lstm_weights(np.random.default_rng(1))
    expected_h, expected_c = keras_lstm_step_by_step(x, weights)
    h_seq, c_seq, gates = lstm_forward(x, *weights)
    np.testing.assert_allclose(h_seq, expected_h, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(c_seq, expected_c, atol=TOLERANCE, rtol=0)
    assert h_seq.dtype == c_seq.dtype == np.float32


def test_gates_returned_by_lstm_forward_are_the_ones_named(digits):
    """The TensorBoard plots label gates by these names, so they must be the right ones."""
    x, _ = digits
    h_seq, c_seq, gates = lstm_forward(x, *random_lstm_weights(np.random.default_rng(2)))
    assert all(gate.shape == (len(x), TIMESTEPS, UNITS) for gate in gates)
    c_prev = np.concatenate([np.zeros_like(c_seq[:, :1]), c_seq[:, :-1]], axis=1)  # c_{t-1}, with c_0 = 0
    # c_t = f_t * c_{t-1} + i_t * g_t  and  h_t = o_t * tanh(c_t), at every timestep.
    np.testing.assert_allclose(c_seq, gates.forget * c_prev + gates.input * gates.candidate, atol=1e-6)
    np.testing.assert_allclose(h_seq, gates.output * np.tanh(c_seq), atol=1e-6)
    for gate in (gates.input, gates.forget, gates.output):
        assert gate.min() >= 0 and gate.max() <= 1
    assert gates.candidate.min() < 0 < gates.candidate.max()


def test_the_scratch_classifier_matches_the_keras_classifier_and_its_gradients(digits):
    """`--cell scratch` and `--cell lstm` are the same model: logits and every weight's gradient."""
    x, y = digits
    keras_model = build_model(Config(cell="lstm", units=UNITS))
    scratch_model = build_model(Config(cell="scratch", units=UNITS))
    rng = np.random.default_rng(3)
    weights = random_lstm_weights(rng) + [rng.normal(0, 0.3, (UNITS, 10)).astype(np.float32),
                                          rng.normal(0, 0.3, (10,)).astype(np.float32)]
    keras_model.set_weights(weights)
    scratch_model.set_weights(weights)

    def logits_and_gradients(model):
        with tf.GradientTape() as tape:
            logits = model(x)  # (B, T, F) -> (B, 10)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return logits, tape.gradient(loss, model.trainable_variables)

    expected_logits, expected_gradients = logits_and_gradients(keras_model)
    got_logits, got_gradients = logits_and_gradients(scratch_model)
    np.testing.assert_allclose(got_logits, expected_logits, atol=TOLERANCE, rtol=0)
    assert len(got_gradients) == len(expected_gradients) == 5
    for variable, got, expected in zip(scratch_model.trainable_variables, got_gradients, expected_gradients):
        scale = np.abs(expected).max()
        assert scale > 0, variable.path
        np.testing.assert_allclose(got, expected, atol=TOLERANCE * scale, rtol=0, err_msg=variable.path)


def test_projection_is_a_keras_lstm_with_recurrent_kernel_p_u(digits):
    """LSTMP feeds back h = m P, so h_{t-1} U = m_{t-1} (P U): a Keras LSTM with recurrent
    kernel P U computes our m_t, and our h_t must be that m_t times P, at every timestep."""
    x, _ = digits
    projected = 8
    rng = np.random.default_rng(4)
    kernel, recurrent_kernel, bias = random_lstm_weights(rng, recurrent=projected)  # U is (R, 4H)
    projection = rng.normal(0, 0.3, (UNITS, projected)).astype(np.float32)  # P (H, R)
    m_seq = np.asarray(keras_lstm([kernel, projection @ recurrent_kernel, bias])(x))  # (B, T, H)
    h_seq, _, _ = lstm_forward(x, kernel, recurrent_kernel, bias, projection=projection)
    assert h_seq.shape == (len(x), TIMESTEPS, projected)
    np.testing.assert_allclose(h_seq, m_seq @ projection, atol=TOLERANCE, rtol=0)
    # And the Keras layer built on the cell agrees with lstm_forward.
    layer = scratch_lstm(UNITS, return_sequences=True, projection=projected)
    layer.build((None, TIMESTEPS, FEATURES))
    layer.set_weights([kernel, recurrent_kernel, bias, projection])
    np.testing.assert_allclose(np.asarray(layer(x)), h_seq, atol=TOLERANCE, rtol=0)


def test_peepholes_start_at_zero_and_then_change_the_output(digits):
    """Zero peepholes are the plain LSTM (the start of training); nonzero ones are used.
    That the peephole terms are the right ones is checked by differentiating them by hand
    (tests/test_bptt.py): the hand-derived gradient only matches if the forward pass is eqs. (2)-(6)."""
    x, _ = digits
    weights = random_lstm_weights(np.random.default_rng(5))
    layer = scratch_lstm(UNITS, return_sequences=True, peepholes=True)
    layer.build((None, TIMESTEPS, FEATURES))
    assert [w.path.rsplit("/", 1)[-1] for w in layer.weights][3:] == [
        "peephole_input", "peephole_forget", "peephole_output"]
    layer.set_weights(weights + [np.zeros(UNITS, np.float32)] * 3)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(keras_lstm(weights)(x)), atol=TOLERANCE, rtol=0)
    peepholes = Peepholes(*np.random.default_rng(6).normal(0, 0.5, (3, UNITS)).astype(np.float32))
    layer.set_weights(weights + list(peepholes))
    h_seq, _, _ = lstm_forward(x, *weights, peepholes=peepholes)
    np.testing.assert_allclose(np.asarray(layer(x)), h_seq, atol=TOLERANCE, rtol=0)
    assert np.abs(h_seq - np.asarray(keras_lstm(weights)(x))).max() > 0.01


def test_scratch_cell_starts_like_keras_with_forget_bias_one():
    model = build_model(Config(cell="scratch", units=UNITS))
    cell = model.get_layer("scratch_1").cell
    bias = np.asarray(cell.bias)  # (4H,), blocks input, forget, candidate, output
    np.testing.assert_array_equal(bias[UNITS:2 * UNITS], 1.0)
    np.testing.assert_array_equal(np.delete(bias, np.s_[UNITS:2 * UNITS]), 0.0)
    # Keras's recurrent initializer: an orthogonal (H, 4H) matrix, whose H rows are orthonormal.
    recurrent = np.asarray(cell.recurrent_kernel)  # (H, 4H)
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(UNITS), atol=1e-5)


@pytest.mark.parametrize("options, message", [
    (dict(cell="lstm", peepholes=True), "--peepholes needs --cell scratch"),
    (dict(cell="gru", recurrent_projection=8), "--recurrent-projection needs --cell scratch"),
    (dict(cell="scratch", recurrent_projection=-1), "--recurrent-projection must be 0 or more"),
])
def test_scratch_only_options_are_refused_elsewhere(options, message):
    """Keras's cells have no peepholes or projection: asking for them is an error, not silently ignored."""
    with pytest.raises(ValueError, match=message):
        Config(**options).validate()


@pytest.mark.parametrize("options", [dict(), dict(peepholes=True, recurrent_projection=8, layers=2),
                                     dict(bidirectional=True)])
def test_scratch_model_saves_and_reloads(tmp_path, options):
    model = build_model(Config(cell="scratch", units=8, **options))
    x = np.random.default_rng(0).random((3, TIMESTEPS, FEATURES), dtype=np.float32)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded(x), model(x), rtol=1e-6, atol=1e-6)


def test_readme_links_point_at_the_lines_they_name():
    """Every README link to a line of the code lands on what it names, so the walkthrough cannot drift.

    A link in a table row whose first cell is an equation number "(n)" must land
    on lines tagged "(n)" (the code marks them `# eq. (n)` in lstm_cell.py and
    `# (n)` in bptt.py); any other line link names its target in its text,
    as "(n)" or as a `backticked` name, which must appear on the first line.
    """
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    link = re.compile(r"\[([^\]]+)\]\(((?:lstm_mnist|scripts)/[\w/]+\.py)#L(\d+)(?:-L(\d+))?\)")
    checked = 0
    for row in readme.splitlines():
        table_equation = re.match(r"\|\s*(\(\d\))\s*\|", row)
        for text, path, first, last in link.findall(row):
            lines = (root / path).read_text().splitlines()
            first, last = int(first), int(last or first)
            assert 1 <= first <= last <= len(lines), f"{path}#L{first}-L{last} is outside the file"
            if table_equation:
                marker, ends = table_equation.group(1), (first, last)
            else:
                named = re.search(r"(\(\d\))|`([^`]+)`", text)
                assert named, f"the README link [{text}]({path}#L{first}) does not say what it points at"
                marker, ends = (named.group(1), (first, last)) if named.group(1) else (named.group(2), (first,))
            for number in ends:
                line = lines[number - 1]
                assert marker in line, f"[{text}]({path}#L{first}-L{last}) should land on {marker}: {line.strip()!r}"
            checked += 1
    assert checked >= 16, "the How it works section links each equation, forward and backward"


def test_the_readme_shows_the_docstrings_equations_and_opens_with_its_intuition():
    """The equations are written out in full once, in lstm_cell.py's docstring: the README's copy must be
    that very block, and the README's "An LSTM in five minutes" must open with the docstring's first paragraph."""
    import lstm_mnist.lstm_cell as lstm_cell

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    equations = re.search(r"\n### The equations, and where they are computed\n.*?```text\n(.*?)```", readme, re.S)
    assert equations, "the README's equations section has no ```text block"
    lines = equations.group(1).splitlines()
    assert [re.search(r"\((\d)\)", line).group(1) for line in lines] == list("12345678")
    assert "".join(f"    {line}\n" for line in lines) in lstm_cell.__doc__, (
        "the README's equations differ from the block in lstm_cell.py's docstring")
    intuition = re.search(r"\n### An LSTM in five minutes\n\n(.+?)\n\n", readme, re.S).group(1)
    docstring_opening = lstm_cell.__doc__.split("\n\n")[1]  # the paragraph after the one-line summary
    assert " ".join(intuition.split()) == " ".join(docstring_opening.split())
    assert lstm_cell.__doc__.index(docstring_opening) < lstm_cell.__doc__.index("(1)")


def test_no_other_module_writes_the_equations_out_again():
    """One copy of the equations (lstm_cell.py's docstring): the other modules refer to them by number."""
    import lstm_mnist.lstm_cell as lstm_cell

    package = Path(lstm_cell.__file__).resolve().parent
    # The lines that define the cell state and the hidden state: any module that repeats them is a second copy.
    defining = [line.strip() for line in lstm_cell.__doc__.splitlines() if re.search(r"\(([57])\)", line)]
    assert len(defining) == 2
    formulas = [line.split("(")[0].strip() for line in defining]  # "c_t = f_t * c_{t-1} + i_t * g_t", ...
    for module in sorted(package.glob("*.py")):
        if module.name == "lstm_cell.py":
            continue
        text = " ".join(module.read_text().split())
        for formula in formulas:
            assert " ".join(formula.split()) not in text, f"{module.name} writes equation {formula!r} out again"
