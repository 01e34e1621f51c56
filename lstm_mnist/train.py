"""Training: the train step, an epoch, an evaluation, and the driver that runs them.

`train_and_evaluate` reads top to bottom: Setup (devices, seeds), Data (data.py),
Model (model.py; Adam with a warmup + cosine learning rate), Train (each epoch a
step on every batch of shuffled, shifted images, then the validation set) and
Evaluate (the test set, once, after training).

The loop is written by hand, not `model.fit`, so that the gradient, its norm, the
clipping and the update are each one visible line (`make_train_step`). Three things
sit one call away: steps.py, what is speed and not maths (ten steps per compiled call;
on a CPU the batch read in two halves at once, `in_shares`, by a model whose loop over
the rows is unrolled, `unroll_for`: README, "Speed"); `Run` (run.py), the rest a long
run needs: run folder, checkpoints, Ctrl-C, --resume, TensorBoard; and `strategy`
(distribution.py), for several GPUs or machines: the model and Adam are made in
`strategy.scope()`, and each step runs through `strategy.run` (steps.py).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from lstm_mnist import distribution, mixed_precision
from lstm_mnist.config import Config
from lstm_mnist.data import make_dataset, pixel_order, split_mnist, training_data
from lstm_mnist.mnist_files import load_mnist
from lstm_mnist.model import build_model
from lstm_mnist.run import Run, StopRequests
from lstm_mnist.steps import STEPS_PER_CALL, Means, in_shares, several_steps_per_call, shares_for, unroll_for


class TrainResult(NamedTuple):
    """What a run returns: the trained model, where its files are, its final numbers."""

    model: keras.Model
    run_dir: Path
    metrics: dict


def learning_rate_schedule(config: Config, steps_per_epoch: int):
    """Adam's learning rate as a function of the step: `constant` (the classic tutorial's), or `cosine`:

    rise linearly from 0 to `learning_rate` over `warmup_epochs`, then follow half a cosine down to 0
    at the last step. Warmup lets Adam's moment estimates settle before the large steps; the decay
    anneals into a minimum: 99% in 6 epochs, where the classic constant 1e-3 stays near 98.5% after
    10-12 (README, "The recipe").
    """
    if config.lr_schedule == "constant":
        return config.learning_rate
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(int(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    return keras.optimizers.schedules.CosineDecay(initial_learning_rate=0.0, warmup_target=config.learning_rate,
                                                  warmup_steps=warmup_steps, decay_steps=total_steps - warmup_steps)


def loss_and_accuracy(y, logits, batch_size=None):
    """A batch's mean cross-entropy and fraction right, float32 []: y int32 [b], logits float32 [b, 10].

    batch_size: B, the images of the whole batch (default b). On several replicas (distribution.py) each
    holds b of the B images and returns its sums divided by B: added up, the shares are the batch's means.
    """
    batch_size = tf.cast(tf.shape(y)[0] if batch_size is None else batch_size, tf.float32)
    losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)  # (b,)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (b, 10) -> (b,); argmax of logits = of softmax
    right = tf.cast(predicted == y, tf.float32)  # (b,): 1 where the digit was read right
    return tf.reduce_sum(losses) / batch_size, tf.reduce_sum(right) / batch_size  # (b,) -> ()


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, clip_norm: float, shares: int = 1):
    """A compiled step: x float32 [B, T, F], y int32 [B] -> mean loss, accuracy, gradient norm, gradients.

    The norm is taken before clipping, the gradients after, as Adam applies them (TensorBoard's histograms).
    shares: 2 on a CPU (steps.in_shares). Several replicas each take b of the B images (batch_size = B) and
    sum their gradients (all-reduce) before the norm: one device's step."""
    distribution.step_sums_the_gradients(optimizer)  # the step below sums them, so the optimizer must not

    @tf.function
    def train_step(x, y, batch_size=None):
        with tf.GradientTape() as tape:
            logits = in_shares(model, x, shares, training=True)  # (b, T, F) -> (b, 10): model(x), on every core
            loss, accuracy = loss_and_accuracy(y, logits, batch_size)
        gradients = tape.gradient(loss, model.trainable_variables)  # backpropagation through time
        gradients = distribution.sum_over_replicas(gradients)  # all-reduce: the whole batch's gradient (one device: as is)
        gradient_norm = tf.linalg.global_norm(gradients)  # sqrt of the sum of every squared entry
        if clip_norm:
            # Rescale all gradients together if their joint norm exceeds
            # clip_norm: the direction is kept, only the step is shortened.
            gradients, _ = tf.clip_by_global_norm(gradients, clip_norm, use_norm=gradient_norm)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss, accuracy, gradient_norm, gradients

    return train_step


def make_eval_step(model: keras.Model, shares: int = 1):
    """Return a compiled function: a batch -> its mean loss, its accuracy and the predicted digits, int32 [B]."""

    # One trace for every batch size: without the signature a smaller last batch was traced again (0.5-0.9 s here).
    @tf.function(input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32),
                                  tf.TensorSpec([None], tf.int32)])
    def eval_step(x, y):
        logits = in_shares(model, x, shares, training=False)  # (B, T, F) -> (B, 10)
        loss, accuracy = loss_and_accuracy(y, logits)
        return loss, accuracy, tf.argmax(logits, axis=-1, output_type=tf.int32)

    return eval_step


def train_epoch(train_steps, batches, means: Means, after_steps: Callable) -> dict:
    """One gradient step per batch; returns the epoch's mean loss and accuracy.

    batches: k batches at a time, x float32 [k, B, T, F] and y int32 [k, B]; train_steps takes a step on
    each (steps.several_steps_per_call). means: zero at a fresh epoch, as the checkpoint left them on resume.
    """
    for x, y in batches:
        per_step, gradients = train_steps(x, y)  # (k, 4): loss, accuracy, gradient norm, learning rate of each step
        after_steps(per_step, gradients)  # gradients: the last step's, one per weight, for TensorBoard
    return means.result()


def evaluate(eval_step, dataset, means: Means) -> tuple[dict | None, np.ndarray]:
    """Mean loss and accuracy over `dataset` (None if it is empty), and every predicted digit, int [N]."""
    means.reset()
    predicted = [np.zeros(0, np.int32)]
    for x, y in dataset:
        loss, accuracy, digits = eval_step(x, y)
        means.update(loss, accuracy, batch_size=len(y))
        predicted.append(digits.numpy())
    return means.result(), np.concatenate(predicted)


def train_and_evaluate(config: Config, log: Callable[[str], None] = print, cache_dir: Path | None = None,
                       resume_dir: Path | None = None, stop_requests: StopRequests | None = None) -> TrainResult:
    """Train as `config` says, evaluate on the test set, save everything in a run folder (run.py).

    log: where the lines for a person go; cache_dir: the decoded MNIST cache; resume_dir: continue
    this run folder; stop_requests: the CLI's signal handlers. Raises errors.OneLineError subclasses.
    """
    config.validate()
    started = time.time()
    # --- Setup: first the devices (TensorFlow allows it only before it runs anything): --strategy
    # default is one device; mirrored and multi_worker make replicas of the model (distribution.py).
    strategy = distribution.strategy_for(config, log)
    keras.utils.set_random_seed(config.seed)  # the one place Python's random, NumPy and TensorFlow are seeded
    if config.deterministic:  # deterministic kernels (an error for ops with none): same seed, bit-identical weights
        tf.config.experimental.enable_op_determinism()

    # --- Data: images become sequences of rows (data.py).
    mnist = load_mnist(config.data, cache_dir=cache_dir, log=log)  # the raw uint8 arrays (mnist_files.py)
    order = pixel_order(config.permute_pixels, config.permutation_seed)  # None: row-major, the default
    splits = split_mnist(mnist, config.val_size, config.train_examples, config.test_examples,
                         config.pixels_per_step, order)
    log(f"data: {len(splits.y_train):,} train / {len(splits.x_val):,} validation / "
        f"{len(splits.x_test):,} test images, each read as {config.timesteps} timesteps of {config.features} pixels"
        f"{' (in one fixed shuffled order)' if config.permute_pixels else ''}")
    gpus = tf.config.list_physical_devices("GPU")
    log(f"device: GPU ({', '.join(gpu.name for gpu in gpus)})" if gpus else "device: CPU (no GPU found)")
    if config.mixed_precision:
        mixed_precision.refuse_unless_possible(gpus)

    # --- Model: recurrent layers over the rows, then 10 logits (model.py); Adam to train it.
    steps_per_epoch = math.ceil(len(splits.y_train) / config.batch_size)
    shares = shares_for(strategy, gpus)  # a CPU's batch is read in halves, one per core (steps.in_shares)
    with strategy.scope():  # what is made in here, the weights and Adam's state, is kept on every replica
        with mixed_precision.policy(config.mixed_precision):  # float16 maths with --mixed-precision, else nothing
            model = build_model(config, unroll_for(config.timesteps, gpus, config.epochs * steps_per_epoch))
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(config, steps_per_epoch))
        if config.mixed_precision:  # the same step with its loss scaled, so that float16 gradients do not vanish
            optimizer, train_step = mixed_precision.loss_scaled_step(model, optimizer, config.clip_norm)
        else:
            train_step = make_train_step(model, optimizer, config.clip_norm, shares)
        optimizer.build(model.trainable_variables)  # Adam's moments, made now, beside the weights they follow
    model.summary(print_fn=lambda text, **_: log(text))
    train_means, validation_means, test_means = Means(), Means(), Means()
    train_steps = several_steps_per_call(train_step, train_means, optimizer, model, strategy)
    eval_step = make_eval_step(model, shares)
    validation_set = make_dataset(splits.x_val, splits.y_val, config.batch_size)
    test_set = make_dataset(splits.x_test, splits.y_test, config.batch_size)

    # --- Train: every epoch, a step on every training batch, then the validation set.
    with Run(config, model=model, optimizer=optimizer, train_means=train_means, validation_means=validation_means,
             splits=splits, steps_per_epoch=steps_per_epoch, data_fingerprint=mnist.fingerprint,
             resume_dir=resume_dir, stop=stop_requests, log=log, started=started,
             steps_per_call=STEPS_PER_CALL, chief=distribution.is_chief(strategy)) as run:
        for epoch in run.epochs():
            # Each epoch's order and shifts depend only on (seed, epoch): a rerun or a resumed run sees the same batches.
            epoch_data = training_data(splits, (config.seed, epoch), config.shift_pixels)
            train = train_epoch(train_steps, run.batches(epoch, epoch_data), train_means, run.after_steps)
            del epoch_data  # 215 MB freed before the next epoch's are made: 0.3-0.4 s less per epoch
            validation, val_predictions = evaluate(eval_step, validation_set, validation_means)
            run.end_of_epoch(epoch, train, validation, val_predictions)

        # --- Evaluate: the test set, touched once, after training.
        test, _ = evaluate(eval_step, test_set, test_means)
        metrics = run.finish(train_means.result(), validation_means.result(), test)  # the last epoch's means
    return TrainResult(model, run.run_dir, metrics)
