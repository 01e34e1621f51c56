"""--mixed-precision: float16 maths on a GPU, float32 weights, and the loss scaled so small gradients survive.

A GPU multiplies float16 numbers several times faster than float32 ones (its
tensor cores), and cuDNN's LSTM kernel takes them. Keras's "mixed_float16"
policy keeps every weight in float32 and computes each layer in float16; the
logits layer stays float32 (model.py), so the softmax and the loss are
computed in full precision. float16 has a narrow range: a gradient smaller
than about 6e-8 becomes 0. So the loss is multiplied by a large factor (the
loss scale, starting at 2^15) before backpropagation, and the gradients are
divided by it again before they are used; Keras's LossScaleOptimizer halves
the factor, and skips the step, whenever a gradient overflowed to inf, and
doubles it after every 2,000 steps without one.

On a CPU float16 is slower than float32 (no float16 units; every op casts),
so the flag is refused there with one line. This is the same training step
as train.py's `make_train_step`, with the loss scaled; it is kept apart so
that the step a learner reads has no scaling in it.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from lstm_mnist import distribution
from lstm_mnist.errors import OneLineError

POLICY = "mixed_float16"
MINIMUM_COMPUTE_CAPABILITY = (7, 0)  # Volta: the first GPUs with float16 tensor cores


def refuse_unless_possible(gpus: list) -> None:
    """OneLineError (exit 2) unless a GPU that computes float16 fast is there; gpus: tf.config's physical GPUs."""
    if not gpus:
        raise OneLineError("--mixed-precision needs a GPU: on a CPU float16 is slower than float32, and "
                           "TensorFlow finds no GPU here; drop the flag", exit_code=2)
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    if capability and tuple(capability) < MINIMUM_COMPUTE_CAPABILITY:
        raise OneLineError(f"--mixed-precision needs a GPU of compute capability 7.0 or newer (float16 tensor "
                           f"cores); this one has {capability[0]}.{capability[1]}; drop the flag", exit_code=2)


@contextlib.contextmanager
def policy(enabled: bool):
    """Layers built inside compute in float16 when `enabled`; Keras's global policy is restored afterwards."""
    if not enabled:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICY)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def loss_scaled_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, clip_norm: float):
    """Wrap `optimizer` in a LossScaleOptimizer; return it and train.py's step with the loss scaled.

    The step returns what train.py's does: loss, accuracy, the (unscaled) gradient norm and gradients. A
    step whose scaled gradient overflowed is skipped by the optimizer and reports a gradient norm of 0.
    """
    distribution.step_sums_the_gradients(optimizer)  # as train.py's step does, before the wrapping
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    from lstm_mnist.train import loss_and_accuracy  # train.py imports this module

    @tf.function  # not reduce_retracing: as train.py's step (steps.OneTracePerBatchSize)
    def train_step(x, y, batch_size=None):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)  # (b, T, F) -> (b, 10), float32
            loss, accuracy = loss_and_accuracy(y, logits, batch_size)
            scaled_loss = optimizer.scale_loss(loss)  # loss x the loss scale
        scaled = tape.gradient(scaled_loss, model.trainable_variables)  # every gradient x the loss scale
        scaled = distribution.sum_over_replicas(scaled)  # all-reduce over the replicas, as in train.py
        scale = tf.convert_to_tensor(optimizer.dynamic_scale)
        gradient_norm = tf.linalg.global_norm(scaled) / scale
        if clip_norm:  # clip(g x s, c x s) = clip(g, c) x s: the same clipping as train.py's
            scaled, _ = tf.clip_by_global_norm(scaled, clip_norm * scale, use_norm=gradient_norm * scale)
        optimizer.apply_gradients(zip(scaled, model.trainable_variables))  # divides by the scale, or skips
        gradients = [tf.cast(gradient, tf.float32) / scale for gradient in scaled]  # clipped, as Adam applies them
        return loss, accuracy, tf.where(tf.math.is_finite(gradient_norm), gradient_norm, 0.0), gradients

    return optimizer, train_step
