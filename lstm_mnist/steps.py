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
      -> float32 [k, 4]: each step's loss, accuracy, gradient norm, learning rate

train.py builds it once (`several_steps_per_call`) and calls it once per k
batches in `train_epoch`; a learner can read train.py as if each call were
one step.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from lstm_mnist import distribution


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


# Steps per compiled call. 10 measured best here (scripts/benchmark.py); Keras's model.fit runs 1 by default.
STEPS_PER_CALL = 10


def several_steps_per_call(train_step, means: Means, optimizer, input_shape: tuple, strategy=None):
    """Speed, not maths: k consecutive training steps in one compiled call (Keras's `steps_per_execution`).

    x float32 [k, B, T, F], y int32 [k, B]: k batches -> float32 [k, 4], each step's loss, accuracy,
    gradient norm and learning rate (for the NaN guard, the progress bar and TensorBoard).
    means: the epoch's running loss and accuracy (Means).
    Calling train_step once per batch from Python costs a trip through Python and the runtime and four
    waits for the result per step; here they happen once per k steps, and the epoch's means are updated
    inside the call. Each step is the same `train_step`, so the weights come out bit for bit the same
    however the steps are grouped (tests/test_fast_loop.py checks it), and a resumed run still matches.
    Measured on 2 CPU cores: 0 to 12% less CPU per image than one call per step with four reads for the
    result, in two invocations of scripts/benchmark.py (README, "Speed").
    input_shape: (T, F), one image's; one trace serves every k and every batch size.
    strategy: a tf.distribute strategy (distribution.py), which runs each step on every replica, on its
    share of the batch; by default tf.distribute's default strategy, one device, which changes nothing.
    """
    strategy = strategy or tf.distribute.get_strategy()

    @tf.function(input_signature=[tf.TensorSpec([None, None, *input_shape], tf.float32),
                                  tf.TensorSpec([None, None], tf.int32)])
    def train_steps(x, y):
        steps, batch_size = tf.shape(y)[0], tf.shape(y)[1]
        per_step = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            shares = distribution.split_batch(strategy, x[i], y[i])  # each replica's part of the batch, and B
            per_replica = strategy.run(train_step, args=shares)  # the step, on every replica at once
            loss, accuracy, gradient_norm = distribution.whole_batch(strategy, per_replica)
            means.update(loss, accuracy, batch_size=batch_size)
            learning_rate = tf.convert_to_tensor(optimizer.learning_rate, tf.float32)  # the rate for the next step
            per_step = per_step.write(i, tf.stack([loss, accuracy, gradient_norm, learning_rate]))
        return per_step.stack()  # (k, 4)

    return train_steps
