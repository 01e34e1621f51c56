"""--pixels-per-step K, --permute-pixels and --forget-bias-init: how an image becomes a sequence of T = 784 / K steps.

Checked against the definition, not against a run: timestep t holds pixels
t*K ... t*K + K - 1 of the image flattened in row-major order (after the
fixed permutation, if any); the permutation is a bijection that depends on
its seed alone and is the same after a real --resume; a K that does not
divide 784 is refused with one line; the model, the row-by-row reading and
the pictures follow T and F; the chrono initialisation is what its paper says.
"""

import json
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from lstm_mnist.config import FEATURES, IMAGE_PIXELS, NUM_CLASSES, PIXELS_PER_STEP_CHOICES, Config
from lstm_mnist.data import images_to_sequences, pixel_order, split_mnist, training_data
from lstm_mnist.figures import sample_inputs_figure, sequences_as_pictures
from lstm_mnist.model import build_model
from lstm_mnist.reading import probabilities_after_each_line, probabilities_after_each_row


@pytest.fixture(scope="module")
def images():
    """Three random uint8 images: every pixel value differs from its neighbours, so a misplaced pixel shows."""
    return np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("pixels_per_step", [1, 7, 16, 28, 56, 784])
def test_timestep_t_holds_pixels_tK_to_tK_plus_K_minus_1(images, pixels_per_step):
    x = images_to_sequences(images, pixels_per_step)
    timesteps = IMAGE_PIXELS // pixels_per_step
    assert x.shape == (3, timesteps, pixels_per_step) and x.dtype == np.float32
    flat = images.reshape(3, -1)  # row-major: pixel (r, c) is flat[28 r + c]
    for t in sorted({0, 1 % timesteps, timesteps // 2, timesteps - 1}):
        np.testing.assert_array_equal(x[:, t], flat[:, t * pixels_per_step:(t + 1) * pixels_per_step] / np.float32(255))
    # The pictures of TensorBoard's IMAGES tab lay the sequence out again: without a permutation, the image.
    np.testing.assert_array_equal(sequences_as_pictures(x) * 255, images)


def test_the_splits_are_cut_the_same_way(mnist):
    order = pixel_order(True, 5)
    splits = split_mnist(mnist, val_size=100, train_examples=50, test_examples=20, pixels_per_step=7, order=order)
    shuffled = np.random.default_rng((0, 1)).permutation(50)  # the order training_data draws for (seed 0, epoch 1)
    each_epoch, _ = training_data(splits, (0, 1), shift_pixels=0)
    for x, source in ((each_epoch, mnist.x_train[100:150][shuffled]), (splits.x_val, mnist.x_train[:100]),
                      (splits.x_test, mnist.x_test[:20])):
        assert x.shape == (len(source), 112, 7)
        np.testing.assert_array_equal(x, images_to_sequences(source, 7, order))


def test_the_permutation_is_a_fixed_bijection(images):
    order = pixel_order(True, 3)
    assert order.shape == (IMAGE_PIXELS,) and sorted(order.tolist()) == list(range(IMAGE_PIXELS))
    np.testing.assert_array_equal(order, pixel_order(True, 3))  # the seed alone decides it
    assert not np.array_equal(order, pixel_order(True, 4)) and not np.array_equal(order, np.arange(IMAGE_PIXELS))
    assert pixel_order(False, 3) is None
    x = images_to_sequences(images, 16, order)  # (3, 49, 16)
    flat = images.reshape(3, -1)
    # The i-th pixel read is pixel order[i]: shuffle first, then cut into steps of K.
    np.testing.assert_array_equal(x.reshape(3, -1) * 255, flat[:, order])
    inverse = np.argsort(order)
    np.testing.assert_array_equal(x.reshape(3, -1)[:, inverse] * 255, flat)  # nothing lost, nothing repeated


@pytest.mark.parametrize("pixels_per_step", [0, 5, 27, 785])
def test_a_pixels_per_step_that_does_not_divide_784_is_refused(pixels_per_step):
    with pytest.raises(ValueError, match="--pixels-per-step must") as caught:
        Config(pixels_per_step=pixels_per_step).validate()
    assert "\n" not in str(caught.value)
    for choice in PIXELS_PER_STEP_CHOICES:
        Config(pixels_per_step=choice).validate()


def test_the_command_refuses_a_bad_reading_with_one_line(tmp_path, run_cli):
    result = run_cli("train", "--pixels-per-step", "5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "--pixels-per-step must divide the 784 pixels of an image" in result.stderr
    assert "1, 2, 4, 7, 8, 14, 16, 28, 49, 56, 98, 112, 196, 392, 784; got 5" in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing was written
    for argv, message in ((["--permutation-seed", "3"], "--permutation-seed needs --permute-pixels"),
                          (["--cell", "gru", "--forget-bias-init", "chrono"], "--forget-bias-init needs an LSTM")):
        result = run_cli("train", *argv)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize("cell", ["lstm", "scratch"])
def test_chrono_initialisation(tmp_path, cell):
    """Tallec & Ollivier (2018): forget bias log(u), u ~ U[1, T - 1]; input bias its negative; the rest 0."""
    config = Config(cell=cell, units=64, pixels_per_step=4, forget_bias_init="chrono")  # T = 196
    model = build_model(config)
    assert model.input_shape == (None, 196, 4)
    bias = model.layers[1].cell.bias.numpy()
    input_bias, forget_bias, rest = bias[:64], bias[64:128], bias[128:]
    assert 0 <= forget_bias.min() and forget_bias.max() <= np.log(195) + 1e-6
    assert forget_bias.std() > 0.3  # 64 different memory lengths, not one
    np.testing.assert_array_equal(input_bias, -forget_bias)
    assert not rest.any()
    # A trained model is saved as model.keras: the initializer must survive the round trip.
    model.save(tmp_path / "model.keras")
    keras.models.load_model(tmp_path / "model.keras")


@pytest.mark.parametrize("pixels_per_step", [4, 56])
def test_reading_and_pictures_follow_the_timesteps(images, pixels_per_step):
    model = build_model(Config(units=6, pixels_per_step=pixels_per_step))
    x = images_to_sequences(images, pixels_per_step)  # (3, T, K)
    per_step = probabilities_after_each_row(model, x)
    assert per_step.shape == (3, IMAGE_PIXELS // pixels_per_step, NUM_CLASSES)
    np.testing.assert_allclose(per_step[:, -1], keras.ops.softmax(model(x)), atol=1e-6)
    per_line = probabilities_after_each_line(model, x)  # (3, 28, 10): one answer per line of 28 pixels
    for line in (0, 13, 27):
        last_pixel = FEATURES * (line + 1) - 1
        np.testing.assert_array_equal(per_line[:, line], per_step[:, last_pixel // pixels_per_step])
    picture = sample_inputs_figure(sequences_as_pictures(x), np.arange(3), pixels_per_step=pixels_per_step)
    assert picture.ndim == 3 and picture.shape[2] == 3


PERMUTED_RUN = ["train", "--train-examples", "2048", "--val-size", "200", "--test-examples", "200", "--units", "8",
                "--batch-size", "32", "--epochs", "2", "--pixels-per-step", "112", "--permute-pixels",
                "--permutation-seed", "11", "--deterministic", "--seed", "7", "--no-tensorboard"]


def test_a_resumed_permuted_run_reads_the_pixels_in_the_same_order(tmp_path, cli_env):
    """Stopped by Ctrl-C in epoch 2 and resumed, a permuted run ends bit for bit where an uninterrupted one does.

    A resumed run that drew another permutation (or none) would train its
    second epoch on other sequences and end with other weights.
    """
    def command(name, *extra):
        return [sys.executable, "-m", "lstm_mnist", *PERMUTED_RUN, "--log-dir", str(tmp_path), "--name", name, *extra]

    straight = subprocess.run(command("straight"), env=cli_env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    assert "each read as 7 timesteps of 112 pixels (in one fixed shuffled order)" in straight.stdout

    # evaluate and predict read the run's images as it did: 7 steps of 112 pixels, in the same shuffled order.
    evaluated = subprocess.run([sys.executable, "-m", "lstm_mnist", "evaluate", str(tmp_path / "straight")],
                               env=cli_env, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "(the same)" in evaluated.stdout  # the accuracy metrics.json recorded at the end of training
    predicted = subprocess.run([sys.executable, "-m", "lstm_mnist", "predict", str(tmp_path / "straight"),
                                "--test-index", "0", "1"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    assert "test image 0 (a 7)" in predicted.stdout and "test image 1 (a 2)" in predicted.stdout
    refused = subprocess.run([sys.executable, "-m", "lstm_mnist", "predict", str(tmp_path / "straight"),
                              "--test-index", "0", "--explain", str(tmp_path / "explained.png")],
                             env=cli_env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--permute-pixels" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "explained.png").exists()

    process = subprocess.Popen(command("stopped"), env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    for line in process.stdout:
        if line.startswith("epoch 1/2"):  # the epoch-1 checkpoint is written; now inside epoch 2
            process.send_signal(signal.SIGINT)
            break
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    saved = json.loads((tmp_path / "stopped" / "config.json").read_text())
    assert (saved["permute_pixels"], saved["permutation_seed"], saved["pixels_per_step"]) == (True, 11, 112)

    resumed = subprocess.run([sys.executable, "-m", "lstm_mnist", "train", "--resume", str(tmp_path / "stopped")],
                             env=cli_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed:" in resumed.stdout
    for a, b in zip(keras.models.load_model(tmp_path / "stopped" / "model.keras").get_weights(),
                    keras.models.load_model(tmp_path / "straight" / "model.keras").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("stopped", "straight")]
    assert metrics[0]["test_accuracy"] == metrics[1]["test_accuracy"]
