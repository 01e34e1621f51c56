"""How the training step is run: several steps per compiled call, each on every replica, into running means.

Nothing here changes the maths of train.make_train_step; it changes how often
Python and the TensorFlow runtime are visited, and on how many devices the
step runs:

    x float32 [k, B, T, F], y int32 [k, B]      k batches, handed out by run.Run.batches
      -> for each of the k batches, inside ONE compiled call:
           the batch split into one share per replica   (distribution.split_batch; one device: all of it)
           train_step on every replica at once          (strategy.run)
           the shares added up to the batch's numbers   (distribution.whole_batch)
           the epoch's running means updated            (Means)
      -> float32 [k, 4]: each step's loss, accuracy, gradient norm, learning rate;
         and the last step's gradients, one per weight (TensorBoard's histograms)

train.py builds it once (`several_steps_per_call`, compiled once for each
batch size, which the trace then knows: `OneTracePerBatchSize`) and calls it
once per k batches in `train_epoch`; a learner can read train.py as if each
call were one step. On a CPU, two more things are speed, not maths: the
model reads the batch in two halves side by side, one per core
(`in_shares`), and its loop over the rows is unrolled (`unroll_for`).
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from lstm_mnist import distribution


class Means:
    """Running means of the loss and the accuracy over every example seen since reset()."""

    def __init__(self):
        self.loss, self.accuracy = keras.metrics.Mean(), keras.metrics.Mean()
        # The running totals and counts, saved in checkpoints so that a resumed epoch's means stay exact.
        self.variables = [*self.loss.variables, *self.accuracy.variables]

    # One compiled call per step: 0.23 ms instead of 0.78 ms eagerly. The signature makes one trace serve every
    # batch size; without it, each new last-batch size (evaluate's, as a Python int) cost another, 20 ms.
    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)] * 2 + [tf.TensorSpec([], tf.int32)])
    def update(self, loss, accuracy, batch_size) -> None:
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


# Steps per compiled call. 10 measured best here (scripts/benchmark.py); Keras's model.fit runs 1 by default.
STEPS_PER_CALL = 10


def several_steps_per_call(train_step, means: Means, optimizer, model: keras.Model, strategy=None):
    """Speed, not maths: k consecutive training steps in one compiled call (Keras's `steps_per_execution`).

    x float32 [k, B, T, F], y int32 [k, B]: k batches -> float32 [k, 4], each step's loss, accuracy,
    gradient norm and learning rate (for the NaN guard, the progress bar and TensorBoard), and the
    gradients of the last step, as Adam applied them (TensorBoard's histograms: no pass of their own).
    means: the epoch's running loss and accuracy (Means).
    Calling train_step once per batch from Python costs a trip through Python and the runtime and four
    waits for the result per step; here they happen once per k steps, and the epoch's means are updated
    inside the call. Each step is the same `train_step`, so the weights come out bit for bit the same
    however the steps are grouped (tests/test_fast_loop.py checks it), and a resumed run still matches.
    Measured on 2 CPU cores: 0 to 12% less CPU per image than one call per step with four reads for the
    result, in two invocations of scripts/benchmark.py (README, "Speed").
    model: the model train_step trains. One trace serves every k; each batch size B has its own
    (OneTracePerBatchSize).
    strategy: a tf.distribute strategy (distribution.py), which runs each step on every replica, on its
    share of the batch; by default tf.distribute's default strategy, one device, which changes nothing.
    """
    strategy = strategy or tf.distribute.get_strategy()

    def train_steps(x, y):
        steps, batch_size = tf.shape(y)[0], tf.shape(y)[1]
        per_step = tf.TensorArray(tf.float32, size=steps)
        gradients = [tf.zeros(weight.shape, tf.float32) for weight in model.trainable_variables]  # replaced below
        for i in tf.range(steps):
            learning_rate = tf.convert_to_tensor(optimizer.learning_rate, tf.float32)  # the rate this step applies
            shares = distribution.split_batch(strategy, x[i], y[i])  # each replica's part of the batch, and B
            per_replica = strategy.run(train_step, args=shares)  # the step, on every replica at once
            loss, accuracy, gradient_norm, gradients = distribution.whole_batch(strategy, per_replica)
            means.update(loss, accuracy, batch_size=batch_size)
            per_step = per_step.write(i, tf.stack([loss, accuracy, gradient_norm, learning_rate]))
        return per_step.stack(), gradients  # (k, 4), and one gradient per weight

    return OneTracePerBatchSize(train_steps, model.input_shape[1:])


class OneTracePerBatchSize:
    """Speed, not maths: a function of x [k, B, ...] and y [k, B], compiled once for each batch size B.

    Traced with B unknown, TensorFlow's gradient of every element-wise sum or product of two [B, H]
    tensors cannot tell whether one was broadcast, and checks it while the step runs (Shape,
    BroadcastGradientArgs, Sum and Reshape, each time); traced with B known, it needs none of them.
    Measured on 2 CPU cores, a default step (unrolled, in two halves; side measurements of 16 alternating
    rounds of 10 calls, twice): 2,513 operations in the traced call against 4,479; 14.1 against 14.7 and
    15.8 against 16.5 ms a step (4% to 5% less wall and CPU time); its trace 2.5 to 3.7 s against 3.9 to
    6.0. The price is a second trace, 1.8 to 2.1 s, for an epoch's smaller last batch, once per run.
    k stays unknown: one trace serves every group of steps. train_step is a plain tf.function for the
    same reason: with `reduce_retracing` it would trace the second batch size with B unknown.
    """

    def __init__(self, function, example_shape: tuple):
        self.function, self.example_shape = function, tuple(example_shape)
        self.compiled = {}  # B -> the tf.function traced for it

    def for_batch_size(self, batch_size: int):
        if batch_size not in self.compiled:
            self.compiled[batch_size] = tf.function(self.function, input_signature=[
                tf.TensorSpec([None, batch_size, *self.example_shape], tf.float32),
                tf.TensorSpec([None, batch_size], tf.int32)])
        return self.compiled[batch_size]

    def __call__(self, x, y):
        return self.for_batch_size(int(x.shape[1]))(x, y)


def in_shares(model: keras.Model, x, shares: int, training: bool):
    """Speed, not maths: model(x) as `shares` pieces of the batch side by side, their logits joined back.

    x float32 [b, T, F] -> logits float32 [b, 10], model(x, training) to float32 round-off: every image is
    read on its own either way, and the gradient, a sum over the batch, is only added up in another order.
    Why: one LSTM step is a chain of 28 small matrix products (B x H by H x 4H) that cannot keep two cores
    busy; two halves of the batch are two chains with nothing between them, which TensorFlow runs at once,
    one per core. Measured on 2 CPU cores (scripts/benchmark.py's step table, README "Speed"): ten steps
    per call 10.7 ms a step, 9.6 with two halves, 8.3 with two halves and the loop unrolled (unroll_for).
    """
    if x.shape[0] is not None:  # a batch size known in advance: Keras's LSTM refuses a share of 0 images
        shares = max(1, min(shares, x.shape[0]))
    if shares == 1:
        return model(x, training=training)
    batch = tf.shape(x)[0]  # known only when the step runs: an empty share (a last batch of 1) computes nothing
    # Share r holds images r*b//n to (r+1)*b//n - 1, as distribution.split_batch cuts a batch between replicas.
    pieces = [x[r * batch // shares:(r + 1) * batch // shares] for r in range(shares)]
    return tf.concat([model(piece, training=training) for piece in pieces], axis=0)


def shares_for(strategy, gpus: list) -> int:
    """How many pieces `in_shares` cuts a batch into: 2 on a CPU of two cores or more, else 1.

    1 on a GPU (one cuDNN call on the whole batch is faster) and with several replicas (the strategy
    already splits the batch: distribution.py). Measured only on 2 cores, so never more than 2.
    """
    if gpus or strategy.num_replicas_in_sync > 1:
        return 1
    return min(2, os.cpu_count() or 1)


# Unroll only runs this long (a default run has 2,580 steps): the break-even point measured below.
UNROLL_FROM_STEPS = 2000


def unroll_for(timesteps: int, gpus: list, total_steps: int) -> bool:
    """Speed, not maths: whether build_model writes the loop over the T steps out in the graph (`unroll`).

    A tf.while_loop pays for every trip round it, and its steps cannot be interleaved; written out, the
    steps are plain ops, which TensorFlow schedules freely between the two halves of `in_shares`. Measured
    on 2 CPU cores (scripts/benchmark.py's step table): 8.3 against 9.6 ms a step, and 15.5 against 17.9
    ms of CPU; but the bigger graph takes about 3.3 s longer to trace (forced on for `lstm-mnist train
    --epochs 1 --train-examples 2000`: first epoch 5.8 s against 2.5 s), repaid after some 2,000 steps.
    At T = 56 it gained 2% for a far longer trace: only T <= 28. Never on a GPU: cuDNN needs the loop.
    """
    return not gpus and timesteps <= 28 and total_steps >= UNROLL_FROM_STEPS
