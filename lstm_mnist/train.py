"""Training: the train step, an epoch, an evaluation, and the driver that runs them.

The story of `train_and_evaluate`, top to bottom:

    Setup     seed Python, NumPy and TensorFlow once
    Data      load MNIST, split it 55k/5k/10k, each image a sequence of 28 rows
    Model     build the LSTM; Adam with a warmup + cosine learning rate
    Train     for each epoch: a step on every training batch, then the validation set
    Evaluate  the test set, once, after training

The loop is written by hand, not `model.fit`, so that the gradient, its norm, the
clipping and the update are each one visible line. What a long run needs besides
(run folder, checkpoints, Ctrl-C, --resume, TensorBoard) is behind `run` (run.py).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from lstm_mnist.config import Config
from lstm_mnist.data import default_cache_dir, load_mnist, make_dataset, pixel_order, split_mnist
from lstm_mnist.model import build_model
from lstm_mnist.run import Run, StopRequests


class TrainResult(NamedTuple):
    """What a run returns: the trained model, where its files are, its final numbers."""

    model: keras.Model
    run_dir: Path
    metrics: dict


def learning_rate_schedule(config: Config, steps_per_epoch: int):
    """Adam's learning rate as a function of the step: `constant` (the classic tutorial's), or `cosine`:

    rise linearly from 0 to `learning_rate` over `warmup_epochs`, then follow
    half a cosine down to 0 at the last step. Warmup lets Adam's moment estimates
    settle before the large steps; the decay anneals into a minimum. This beats,
    in 8 epochs, what the classic constant 1e-3 reaches in 12.
    """
    if config.lr_schedule == "constant":
        return config.learning_rate
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(int(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=config.learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=total_steps - warmup_steps,
        alpha=0.0,
    )


def loss_and_accuracy(y, logits):
    """One batch's mean cross-entropy and fraction right, float32 []: y int32 [B], logits float32 [B, 10]."""
    loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))  # (B,) -> ()
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (B, 10) -> (B,); argmax of logits = of softmax
    return loss, tf.reduce_mean(tf.cast(predicted == y, tf.float32))


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, clip_norm: float):
    """A compiled step: x float32 [B, 28, 28], y int32 [B] -> mean loss, accuracy, gradient norm (unclipped)."""

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)  # (B, T, F) -> (B, 10)
            loss, accuracy = loss_and_accuracy(y, logits)
        gradients = tape.gradient(loss, model.trainable_variables)  # backpropagation through time
        gradient_norm = tf.linalg.global_norm(gradients)  # sqrt of the sum of every squared entry
        if clip_norm:
            # Rescale all gradients together if their joint norm exceeds
            # clip_norm: the direction is kept, only the step is shortened.
            gradients, _ = tf.clip_by_global_norm(gradients, clip_norm, use_norm=gradient_norm)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss, accuracy, gradient_norm

    return train_step


def make_eval_step(model: keras.Model):
    """Return a compiled function: a batch -> its mean loss, its accuracy and the predicted digits, int32 [B]."""

    @tf.function(reduce_retracing=True)
    def eval_step(x, y):
        logits = model(x, training=False)  # (B, T, F) -> (B, 10)
        loss, accuracy = loss_and_accuracy(y, logits)
        return loss, accuracy, tf.argmax(logits, axis=-1, output_type=tf.int32)

    return eval_step


class Means:
    """Running means of the loss and the accuracy over every example seen since reset()."""

    def __init__(self):
        self.loss, self.accuracy = keras.metrics.Mean(), keras.metrics.Mean()
        # The running totals and counts, saved in checkpoints so that a resumed epoch's means stay exact.
        self.variables = [*self.loss.variables, *self.accuracy.variables]

    @tf.function(reduce_retracing=True)  # one compiled call per step: 0.23 ms instead of 0.78 ms eagerly
    def update(self, loss, accuracy, batch_size: int) -> None:
        # Weighted by the batch size, so a smaller last batch counts as many examples as it holds.
        self.loss.update_state(loss, sample_weight=batch_size)
        self.accuracy.update_state(accuracy, sample_weight=batch_size)

    def reset(self) -> None:
        self.loss.reset_state()
        self.accuracy.reset_state()

    def result(self) -> dict | None:
        """{"loss": ..., "accuracy": ...}, or None if no example was seen (--val-size 0)."""
        if float(self.loss.count) == 0:
            return None
        return {"loss": float(self.loss.result()), "accuracy": float(self.accuracy.result())}


def train_epoch(train_step, batches, means: Means, after_step: Callable) -> dict:
    """One gradient step per batch, (x float32 [B, T, F], y int32 [B]); returns the epoch's mean loss and accuracy.

    means: zero at a fresh epoch, as the checkpoint left them in a resumed one.
    """
    for x, y in batches:
        loss, accuracy, gradient_norm = train_step(x, y)
        means.update(loss, accuracy, batch_size=len(y))
        after_step(len(y), loss, accuracy, gradient_norm)
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
    # --- Setup: the one place randomness is seeded (Python's random, NumPy, TensorFlow).
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        # Deterministic kernels (an error for ops with none): the same seed gives bit-identical weights.
        tf.config.experimental.enable_op_determinism()

    # --- Data: images become sequences of rows (data.py).
    mnist = load_mnist(config.data, cache_dir=cache_dir or default_cache_dir(), log=log)
    splits = split_mnist(mnist, config.val_size, config.train_examples, config.test_examples,
                         config.pixels_per_step, pixel_order(config.permute_pixels, config.permutation_seed))
    log(f"data: {len(splits.x_train):,} train / {len(splits.x_val):,} validation / "
        f"{len(splits.x_test):,} test images, each read as {config.timesteps} timesteps of {config.features} pixels"
        f"{' (in one fixed shuffled order)' if config.permute_pixels else ''}")
    gpus = [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    log(f"device: GPU ({', '.join(gpus)})" if gpus else "device: CPU (no GPU found)")

    # --- Model: recurrent layers over the rows, then 10 logits (model.py); Adam to train it.
    model = build_model(config)
    model.summary(print_fn=lambda text, **_: log(text))
    steps_per_epoch = math.ceil(len(splits.x_train) / config.batch_size)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(config, steps_per_epoch))
    train_step, eval_step = make_train_step(model, optimizer, config.clip_norm), make_eval_step(model)
    train_means, validation_means, test_means = Means(), Means(), Means()
    validation_set = make_dataset(splits.x_val, splits.y_val, config.batch_size)
    test_set = make_dataset(splits.x_test, splits.y_test, config.batch_size)

    # --- Train: every epoch, a step on every training batch, then the validation set.
    with Run(config, model=model, optimizer=optimizer, train_means=train_means, validation_means=validation_means,
             splits=splits, steps_per_epoch=steps_per_epoch, data_fingerprint=mnist.fingerprint,
             resume_dir=resume_dir, stop=stop_requests, log=log, started=started) as run:
        for epoch in run.epochs():
            # Each epoch's order depends only on (seed, epoch): a rerun or a resumed run sees the same batches.
            training_set = make_dataset(splits.x_train, splits.y_train, config.batch_size,
                                        shuffle_seed=(config.seed, epoch))
            train = train_epoch(train_step, run.batches(epoch, training_set), train_means, run.after_step)
            validation, val_predictions = evaluate(eval_step, validation_set, validation_means)
            run.end_of_epoch(epoch, train, validation, val_predictions)

        # --- Evaluate: the test set, touched once, after training.
        test, _ = evaluate(eval_step, test_set, test_means)
        # The last epoch's means: as the loop left them, or as the checkpoint kept them.
        metrics = run.finish(train_means.result(), validation_means.result(), test)
    return TrainResult(model, run.run_dir, metrics)
