"""The fast loop is the same maths: steps grouped k per call, the shifted training images, resume between groups.

Speed itself is measured by scripts/benchmark.py, never asserted here. What is
asserted is what makes the speed safe: grouping the steps any way gives the
same weights bit for bit (so a run stopped and resumed between any two steps
ends where an uninterrupted one does), the loop computes what one call per
step computed, and what model.fit computes for the same model; and the
augmentation moves each image by what it says, the same way every time for
the same (seed, epoch).
"""

import dataclasses
import importlib
import os
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_mnist.config import FEATURES, TIMESTEPS, Config
from lstm_mnist.data import images_to_sequences, make_dataset, random_shifts, split_mnist, training_data
from lstm_mnist.errors import OneLineError
from lstm_mnist.model import build_model
from lstm_mnist.run import Run
from lstm_mnist import steps
from lstm_mnist.steps import Means, in_shares, several_steps_per_call, shares_for, unroll_for
from lstm_mnist.train import learning_rate_schedule, make_eval_step, make_train_step, train_and_evaluate

BATCH = 16
# A clip norm below the gradient norms of these steps (0.24 to 0.50), so that clipping acts on every step.
CONFIG = Config(units=8, learning_rate=1e-2, clip_norm=0.2)


@pytest.fixture(scope="module")
def batches(mnist):
    """150 training digits in batches of 16: nine full batches and a last one of 6."""
    x = images_to_sequences(mnist.x_train[:150])  # (150, T, F)
    y = mnist.y_train[:150].astype(np.int32)
    return x, y


def fresh(config=CONFIG, shares=1, unroll=False):
    """The model, optimizer, means and k-step function of a run, from the same seed every time."""
    keras.utils.set_random_seed(0)
    model = build_model(config, unroll=unroll)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(config, steps_per_epoch=10))
    means = Means()
    train_step = make_train_step(model, optimizer, config.clip_norm, shares)
    return model, optimizer, means, train_step, several_steps_per_call(train_step, means, optimizer, model)


def run_in_groups(groups: list[int], x, y, shares=1, config=CONFIG, unroll=False):
    """Train on the 10 batches, `groups` batches per call: weights, per-step numbers, means, last step's gradients."""
    model, _, means, _, train_steps = fresh(config, shares=shares, unroll=unroll)
    per_step, batch = [], 0
    for k in groups:
        start, end = batch * BATCH, min((batch + k) * BATCH, len(y))
        size = min(BATCH, end - start)
        numbers, gradients = train_steps(x[start:end].reshape(k, size, TIMESTEPS, FEATURES),
                                         y[start:end].reshape(k, size))
        per_step.append(numbers.numpy())
        batch += k
    return model.get_weights(), np.concatenate(per_step), means.result(), [g.numpy() for g in gradients]


@pytest.fixture(scope="module")
def reference(batches):
    """Nine batches in one call, then the last, smaller batch (always a call of its own): weights, per step, means."""
    return run_in_groups([9, 1], *batches)


def test_steps_grouped_any_way_give_bit_identical_weights(batches, reference):
    x, y = batches
    for groups in ([1] * 10, [4, 5, 1]):
        weights, per_step, means, _ = run_in_groups(groups, x, y)
        for got, expected in zip(weights, reference[0], strict=True):
            np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(per_step, reference[1])
        assert means == reference[2]
    assert reference[1].shape == (10, 4)  # loss, accuracy, gradient norm, learning rate of each step


@pytest.mark.parametrize("shares", [2, 3])
def test_a_batch_read_in_shares_side_by_side_trains_what_the_whole_batch_trains(batches, reference, shares):
    """steps.in_shares is speed, not maths: the same 10 steps (the last batch of 6 cut unevenly) to float32."""
    weights, per_step, means, _ = run_in_groups([9, 1], *batches, shares=shares)
    assert not all(np.array_equal(got, expected) for got, expected in zip(weights, reference[0]))  # really run apart
    for got, expected in zip(weights, reference[0], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per_step, reference[1], rtol=1e-5, atol=1e-6)
    assert means == pytest.approx(reference[2], rel=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "scratch"])  # the two LSTMs this package teaches
def test_an_unrolled_model_trains_what_the_looped_one_trains(batches, cell):
    """steps.unroll_for is speed, not maths: the loop over the rows written out gives the same 10 steps."""
    config = dataclasses.replace(CONFIG, cell=cell)
    looped = run_in_groups([9, 1], *batches, config=config)
    unrolled = run_in_groups([9, 1], *batches, shares=2, config=config, unroll=True)  # as a default run on a CPU
    for got, expected in zip(unrolled[0], looped[0], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unrolled[1], looped[1], rtol=1e-5, atol=1e-6)


def test_the_speed_settings_apply_where_they_were_measured_and_nowhere_else():
    default = tf.distribute.get_strategy()
    assert shares_for(default, gpus=[]) == min(2, os.cpu_count())  # a CPU: halves, one per core
    assert shares_for(default, gpus=["GPU:0"]) == 1  # cuDNN reads the whole batch at once
    assert shares_for(SimpleNamespace(num_replicas_in_sync=2), gpus=[]) == 1  # the replicas split it already
    assert unroll_for(TIMESTEPS, gpus=[], total_steps=6 * 430)  # a default run on a CPU: 2,580 steps
    assert not unroll_for(TIMESTEPS, gpus=[], total_steps=steps.UNROLL_FROM_STEPS - 1)  # too short to repay
    assert not unroll_for(TIMESTEPS, gpus=["GPU:0"], total_steps=10**6)  # cuDNN needs the loop
    assert not unroll_for(56, gpus=[], total_steps=10**6)  # --pixels-per-step 14: the trace costs too much
    assert unroll_for(14, gpus=[], total_steps=10**6)  # --pixels-per-step 56


def test_the_eval_step_traces_once_for_every_batch_size(batches):
    """A validation set's smaller last batch (and the test set's) reuses the one trace: no second compile."""
    x, y = batches
    model = build_model(CONFIG)
    eval_step = make_eval_step(model, shares=2)
    for size in (16, 6, 1):
        loss, accuracy, digits = eval_step(tf.constant(x[:size]), tf.constant(y[:size]))
        logits = model(x[:size], training=False).numpy()
        np.testing.assert_array_equal(digits.numpy(), logits.argmax(axis=-1))
        np.testing.assert_allclose(accuracy.numpy(), np.mean(logits.argmax(axis=-1) == y[:size]))
    assert eval_step.experimental_get_tracing_count() == 1


def test_in_shares_gives_every_image_its_own_logits_even_when_a_share_is_empty(batches):
    x, y = batches
    model = build_model(CONFIG)
    compiled = tf.function(in_shares, reduce_retracing=True)
    for size in (1, 2, 5, 16):  # 1 image in 2 shares: one share holds none
        expected = model(x[:size], training=False).numpy()
        for shares in (2, 3):
            for call in (in_shares, compiled):  # eagerly, and compiled as the training step is
                got = call(model, tf.constant(x[:size]), shares, training=False).numpy()
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    _, _, means, _, train_steps = fresh(shares=2)
    train_steps(x[:1].reshape(1, 1, TIMESTEPS, FEATURES), y[:1].reshape(1, 1))  # a last batch of one image trains
    assert means.result()["loss"] > 0


def test_the_step_is_traced_once_per_batch_size_with_the_size_known(batches):
    """steps.OneTracePerBatchSize: B is part of each trace, so the gradient holds no run-time broadcast checks.

    Each batch size is traced once, whatever k, and the two halves of in_shares keep their sizes known
    too; the weights come out as from one trace with B unknown, to float32 round-off.
    """
    x, y = batches
    model, _, _, train_step, train_steps = fresh(shares=2, unroll=True)
    traces = []  # the step's own traces after each call (its first call traces it twice: Adam makes its variables)
    for k, size in ((3, 16), (2, 16), (1, 6)):  # full batches in two groups, then a last batch of 6
        train_steps(x[:k * size].reshape(k, size, TIMESTEPS, FEATURES), y[:k * size].reshape(k, size))
        traces.append(train_step.experimental_get_tracing_count())
    assert traces[1] == traces[0] and traces[2] == traces[0] + 1  # another k: none; another B: one
    assert sorted(train_steps.compiled) == [6, 16]
    assert all(compiled.experimental_get_tracing_count() == 1 for compiled in train_steps.compiled.values())
    for size in (16, 6):
        graph = train_steps.for_batch_size(size).get_concrete_function().graph.as_graph_def()
        ops = [node.op for function in graph.library.function for node in function.node_def]
        assert ops.count("MatMul") > 100 and "BroadcastGradientArgs" not in ops, size  # unrolled, no checks

    known = model.get_weights()
    unknown_model, _, _, _, unknown_steps = fresh(shares=2, unroll=True)
    any_size = tf.function(unknown_steps.function, input_signature=[  # as before: one trace, B unknown
        tf.TensorSpec([None, None, TIMESTEPS, FEATURES], tf.float32), tf.TensorSpec([None, None], tf.int32)])
    for k, size in ((3, 16), (2, 16), (1, 6)):
        any_size(x[:k * size].reshape(k, size, TIMESTEPS, FEATURES), y[:k * size].reshape(k, size))
    graph = any_size.get_concrete_function().graph.as_graph_def()
    assert "BroadcastGradientArgs" in [node.op for function in graph.library.function for node in function.node_def]
    for got, expected in zip(known, unknown_model.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_several_steps_per_call_compute_what_one_call_per_step_computes(batches, reference):
    """The k-step call against the phase-1 loop: train_step once per batch from Python, means updated outside."""
    x, y = batches
    weights, per_step, means, last_gradients = reference
    model, optimizer, one_by_one, train_step, _ = fresh()
    for step, (batch_x, batch_y) in enumerate(make_dataset(x, y, BATCH)):
        learning_rate = float(optimizer.learning_rate)  # the rate this step applies
        loss, accuracy, gradient_norm, gradients = train_step(batch_x, batch_y)
        one_by_one.update(loss, accuracy, batch_size=len(batch_y))
        np.testing.assert_allclose(per_step[step], [float(loss), float(accuracy), float(gradient_norm),
                                                    learning_rate], rtol=1e-6)
    for got, expected in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # The k-step call hands back the gradients of its last step (TensorBoard's histograms), as Adam applied them:
    assert float(gradient_norm) > CONFIG.clip_norm  # clipped in this step, so the check below tells them apart
    for got, expected in zip(last_gradients, gradients, strict=True):
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tf.linalg.global_norm(last_gradients), CONFIG.clip_norm, rtol=1e-5)
    assert one_by_one.result() == pytest.approx(means, rel=1e-6)


def test_our_loop_trains_what_model_fit_trains(batches, reference):
    """Same weights, same batches, same Adam, schedule and clipping: model.fit ends where our loop does (float32)."""
    x, y = batches
    config, weights = CONFIG, reference[0]
    keras.utils.set_random_seed(0)
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate_schedule(config, steps_per_epoch=10),
                                                  global_clipnorm=config.clip_norm),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for got, expected in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # bit for bit on the machine it was written on


class ResetCounter:
    def reset(self):
        pass


def groups_handed_out(run: Run, epoch: int, examples: int) -> list[int]:
    """Batches per group that run.batches hands out for one epoch, advancing the step as after_steps would."""
    x = np.zeros((examples, TIMESTEPS, FEATURES), np.float32)
    y = np.zeros(examples, np.int32)
    sizes = []
    for group_x, group_y in run.batches(epoch, (x, y)):
        assert group_x.shape[:2] == group_y.shape
        sizes.append(group_y.shape)
        run.step += group_y.shape[0]
    return sizes


def test_groups_end_at_multiples_of_k_at_checkpoints_and_before_the_last_small_batch():
    config = Config(batch_size=4, checkpoint_every_steps=7)
    run = Run(config, model=None, optimizer=None, train_means=ResetCounter(), validation_means=None, splits=None,
              steps_per_epoch=6, data_fingerprint="", steps_per_call=10)
    # 22 images: 5 batches of 4, then one of 2. Steps 1-6 are epoch 1, 7-12 epoch 2.
    assert groups_handed_out(run, 1, 22) == [(5, 4), (1, 2)]
    # Epoch 2 starts at step 6: a checkpoint is due after step 7, a multiple of k after step 10.
    assert groups_handed_out(run, 2, 22) == [(1, 4), (3, 4), (1, 4), (1, 2)]
    # Resumed at step 15 (epoch 3, 3 batches done): the rest of the epoch, cut at the next checkpoint (21).
    run.step = 15
    assert groups_handed_out(run, 3, 22) == [(2, 4), (1, 2)]
    # With --profile, the first and last profiled step end a group too.
    profiled = Run(dataclasses.replace(config, checkpoint_every_steps=0), model=None, optimizer=None,
                   train_means=ResetCounter(), validation_means=None, splits=None, steps_per_epoch=20,
                   data_fingerprint="", steps_per_call=10)
    profiled.dashboard = SimpleNamespace(profile=True, before_step=lambda step: None)
    assert groups_handed_out(profiled, 1, 80) == [(5, 4), (5, 4), (10, 4)]


@pytest.mark.parametrize("unrolled", [False, True])
def test_a_run_resumed_between_two_groups_matches_one_that_never_stopped(tmp_path, cache_dir, monkeypatch, unrolled):
    """A crash right after the checkpoint at step 9 (not a multiple of k): the resume regroups from there.

    unrolled: as a run long enough for steps.unroll_for (this one has 14 steps) would be.
    """
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-home"))
    monkeypatch.setattr(steps, "UNROLL_FROM_STEPS", 1 if unrolled else steps.UNROLL_FROM_STEPS)
    config = Config(epochs=2, train_examples=200, val_size=64, test_examples=64, batch_size=32, units=8,
                    checkpoint_every_steps=3, tensorboard=False, log_dir=str(tmp_path), seed=3)

    def train(name, **kwargs):
        return train_and_evaluate(dataclasses.replace(config, name=name), cache_dir=cache_dir, **kwargs)

    straight = train("straight", log=lambda line: None)

    class Crash(Exception):
        pass

    save = Run.save

    def save_then_crash(run):
        save(run)
        if run.step == 9:  # 7 steps per epoch: inside epoch 2, two steps into a group of k
            raise Crash

    monkeypatch.setattr(Run, "save", save_then_crash)
    with pytest.raises(Crash):
        train("crashed", log=lambda line: None)
    monkeypatch.setattr(Run, "save", save)
    lines = []
    resumed = train("crashed", log=lines.append, resume_dir=tmp_path / "crashed")
    assert any(line.startswith(f"resumed: {tmp_path / 'crashed'} at step 9 (epoch 2)") for line in lines), lines
    assert resumed.model.get_layer("lstm_1").unroll == straight.model.get_layer("lstm_1").unroll == unrolled
    for got, expected in zip(resumed.model.get_weights(), straight.model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)
    for key in ("test_loss", "test_accuracy", "val_loss", "train_loss", "train_accuracy", "steps"):
        assert resumed.metrics[key] == straight.metrics[key], key


# --- The augmentation ---------------------------------------------------------------------


def one_pixel_image(row: int, column: int) -> np.ndarray:
    image = np.zeros((1, TIMESTEPS, FEATURES), np.uint8)
    image[0, row, column] = 255
    return image


def test_random_shifts_move_each_image_by_what_was_drawn_and_fill_with_blank_paper():
    images = np.repeat(one_pixel_image(10, 12), 2000, axis=0)  # (2000, 28, 28)
    shifted = random_shifts(images, 2, np.random.default_rng(0))
    assert shifted.dtype == np.uint8 and shifted.shape == images.shape
    assert (shifted.reshape(2000, -1).sum(axis=1) == 255).all()  # the pixel is moved, never lost or doubled
    _, rows, columns = np.nonzero(shifted)  # (2000,) each: where each image's pixel went
    draws = np.random.default_rng(0)
    down, right = draws.integers(-2, 3, 2000), draws.integers(-2, 3, 2000)  # what random_shifts drew, in order
    np.testing.assert_array_equal(rows, 10 + down)  # positive: down
    np.testing.assert_array_equal(columns, 12 + right)  # positive: right
    assert len(set(zip(down, right))) == 25  # every shift in -2..2 x -2..2 was drawn
    # At the edge, a pixel moved out of the image is gone: blank paper comes in, nothing wraps around.
    edge = random_shifts(np.repeat(one_pixel_image(0, 0), 500, axis=0), 2, np.random.default_rng(1))
    kept = edge.reshape(500, -1).sum(axis=1) == 255
    assert 0 < kept.sum() < 500
    assert not edge[:, -2:, :].any() and not edge[:, :, -2:].any()


def test_training_data_depends_only_on_seed_and_epoch(mnist):
    splits = split_mnist(mnist, val_size=100, train_examples=300, test_examples=50)
    x_val, x_test = splits.x_val.copy(), splits.x_test.copy()
    first, again = training_data(splits, (0, 1), 2), training_data(splits, (0, 1), 2)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[0].dtype == np.float32 and first[0].shape == (300, TIMESTEPS, FEATURES)
    other_epoch = training_data(splits, (0, 2), 2)
    assert not np.array_equal(first[1], other_epoch[1])
    # Without shifts: exactly the images of the split, in make_dataset's order for the same (seed, epoch).
    unshifted_x, unshifted_y = training_data(splits, (0, 1), 0)
    order = np.random.default_rng((0, 1)).permutation(300)
    np.testing.assert_array_equal(unshifted_x, splits.sequences(splits.train_images[order]))
    np.testing.assert_array_equal(unshifted_y, splits.y_train[order])
    # With shifts: the same digits in the same order, each moved by at most 2 pixels (same ink, roughly).
    np.testing.assert_array_equal(first[1], unshifted_y)
    assert not np.array_equal(first[0], unshifted_x)
    # Validation and test images are never shifted.
    np.testing.assert_array_equal(splits.x_val, x_val)
    np.testing.assert_array_equal(splits.x_test, x_test)


# --- A GPU, when there is one ----------------------------------------------------------------


@pytest.mark.skipif(not tf.config.list_physical_devices("GPU"),
                    reason="no GPU here: the default LSTM's cuDNN kernel can only be checked on one")
def test_on_a_gpu_the_default_training_step_uses_cudnn(batches):
    x, y = batches
    _, _, _, _, train_steps = fresh(Config(units=8))
    graph = train_steps.for_batch_size(BATCH).get_concrete_function().graph
    ops = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        ops |= {node.op for node in function.node_def}
    assert any(op.startswith("CudnnRNN") for op in ops), sorted(ops)


@pytest.mark.parametrize("mixed_precision", [False, True], ids=["float32", "mixed-precision"])
def test_a_run_that_finds_a_gpu_trains_through_keras_cudnn_path(tmp_path, cache_dir, monkeypatch, mixed_precision):
    """The GPU test above runs only on a GPU; this one runs everywhere, one step short of the kernel.

    TensorFlow is made to report one GPU (of compute capability 9.0, for --mixed-precision), and Keras to
    believe one is there; Keras's cuDNN function is replaced by a spy that notes its input and declines
    (NotImplementedError, as Keras's own check does), so Keras falls back to its loop and the run finishes
    on the CPU. The spy must have been reached with the training images: the package's GPU settings
    (the loop kept, no recurrent dropout, tanh and sigmoid, a bias) are what Keras's cuDNN path needs,
    even where a CPU run would unroll (UNROLL_FROM_STEPS 1 here), and with float16 under --mixed-precision.
    """
    try:
        keras_tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")  # private: where Keras picks cuDNN
        keras_tf_rnn._is_gpu_available, keras_tf_rnn._cudnn_lstm  # both must exist
    except (ImportError, AttributeError):
        pytest.skip(f"Keras {keras.__version__} no longer picks cuDNN in keras.src.backend.tensorflow.rnn, "
                    "so its choice cannot be watched here; the GPU-only test above still checks the kernel")
    physical_devices = tf.config.list_physical_devices
    fake_gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: [fake_gpu] if kind == "GPU" else physical_devices(kind))
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"device_name": "a test's GPU", "compute_capability": (9, 0)})
    monkeypatch.setattr(keras_tf_rnn, "_is_gpu_available", lambda: True)
    reached = []

    def spy(inputs, *args, **kwargs):
        reached.append((tuple(inputs.shape[1:]), inputs.dtype.name))
        raise NotImplementedError  # "no cuDNN after all": Keras runs its own loop instead

    monkeypatch.setattr(keras_tf_rnn, "_cudnn_lstm", spy)
    monkeypatch.setattr(steps, "UNROLL_FROM_STEPS", 1)  # a CPU would unroll this run; a GPU must not
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-home"))
    config = Config(epochs=1, train_examples=64, val_size=32, test_examples=32, batch_size=32, units=8,
                    tensorboard=False, log_dir=str(tmp_path), mixed_precision=mixed_precision)
    lines = []
    result = train_and_evaluate(config, log=lines.append, cache_dir=cache_dir)
    assert "device: GPU (/physical_device:GPU:0)" in lines
    assert ((TIMESTEPS, FEATURES), "float16" if mixed_precision else "float32") in reached, reached
    assert result.metrics["test_examples"] == 32


# --- Mixed precision: a GPU-only flag ----------------------------------------------------------


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="this machine has a GPU, so it is accepted")
def test_mixed_precision_is_refused_on_a_cpu_with_one_line(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-home"))
    config = Config(mixed_precision=True, train_examples=64, val_size=64, test_examples=64, log_dir=str(tmp_path / "logs"))
    with pytest.raises(OneLineError, match="^--mixed-precision needs a GPU") as refused:
        train_and_evaluate(config, log=lambda line: None, cache_dir=cache_dir)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    assert not (tmp_path / "logs").exists()  # refused before the run folder is made


def test_the_loss_scaled_float16_step_follows_the_float32_step(batches):
    """What --mixed-precision runs on a GPU, run here on the CPU: same loss and gradient norm to float16 precision."""
    from lstm_mnist import mixed_precision

    x, y = batches
    float32 = fresh()
    keras.utils.set_random_seed(0)
    with mixed_precision.policy(True):
        model = build_model(CONFIG)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for whatever is built next
    assert model.get_layer("lstm_1").compute_dtype == "float16" and model.get_layer("logits").compute_dtype == "float32"
    model.set_weights(float32[0].get_weights())
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(CONFIG, steps_per_epoch=10))
    optimizer, train_step = mixed_precision.loss_scaled_step(model, optimizer, CONFIG.clip_norm)
    optimizer.build(model.trainable_variables)
    for step in range(3):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        expected = [float(value) for value in float32[3](x[batch], y[batch])[:3]]
        got = [float(value) for value in train_step(x[batch], y[batch])[:3]]
        assert got == pytest.approx(expected, rel=2e-2), step  # loss, accuracy, gradient norm
    for got, expected in zip(model.get_weights(), float32[0].get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, atol=2e-3)  # float32 weights, moved by 3 steps of 1e-3
    assert float(optimizer.dynamic_scale) == 2.0**15  # no overflow in these steps: nothing was skipped
