"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model's weights, the optimizer's state (Adam's two
moment estimates per weight and its step counter, which is also the position
in the learning-rate schedule), the state of every random-number generator
inside the model (dropout's masks come from Keras "seed generators") and the
running training metrics of the epoch in progress. Nothing else is needed: the epoch and the batch within it follow
from the step counter, and each epoch's shuffling follows from (seed, epoch)
(see data.make_dataset), so a resumed run replays exactly the batches the
original run would have seen.

Files live in <run_dir>/checkpoints/, written by TensorFlow's
`tf.train.CheckpointManager`. A save first writes the new `ckpt-N.*` files
completely, and only then atomically rewrites the small `checkpoint` index
that names the latest one; a crash at any moment therefore leaves the index
pointing at a complete checkpoint (tests/test_resume.py kills a run during a
save to check this).

Why not Keras's BackupAndRestore or ModelCheckpoint: they are callbacks of
`model.fit`'s loop (BackupAndRestore resumes by changing fit's starting
epoch), and this package writes its loop out by hand so each step can be read.
`tf.train.Checkpoint` is the library's tool for custom loops.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import keras
import tensorflow as tf


class CheckpointError(Exception):
    """A checkpoint could not be written or read. The message is one line for a person."""


def plain_reason(error: Exception) -> str:
    """The human part of a TensorFlow I/O error: "No space left on device", not the op's internals.

    TF formats them as "{{function_node ...}} <temporary path>; <reason> [Op:SaveV2]".
    """
    message = (getattr(error, "message", None) or str(error)).strip().splitlines()[0]
    message = re.sub(r"\{\{.*?\}\}", "", message)
    message = re.sub(r"\s*\[Op:\w+\]", "", message)
    return message.split(";")[-1].strip() or type(error).__name__


class Checkpointer:
    """Saves and restores one run's training state in <run_dir>/checkpoints."""

    def __init__(self, run_dir: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 metric_variables: list):
        self.run_dir = run_dir
        self.directory = run_dir / "checkpoints"
        # Adam creates its moment variables lazily, on the first step; build
        # them now so a restore has somewhere to put the saved values.
        optimizer.build(model.trainable_variables)
        self.optimizer = optimizer
        # A Keras seed generator's state is not a weight, and tf.train.Checkpoint
        # does not find it through the model, so it is listed by hand; without it
        # a resumed run would draw dropout masks from the start of the sequence again.
        rng_states = [v for v in model.non_trainable_variables if "seed_generator_state" in v.path]
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, train_metrics=metric_variables,
                                              rng_states=rng_states)
        # Two are kept, so a checkpoint that turns out unreadable still has a predecessor.
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=2)

    @property
    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None if there is none."""
        latest = self.manager.latest_checkpoint
        return int(latest.rsplit("-", 1)[1]) if latest else None

    def save(self, step: int) -> None:
        """Write a checkpoint named after the global step; raise CheckpointError if the disk refuses."""
        try:
            self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as error:
            # Remove the half-written files (TensorFlow writes into *_temp
            # first), which also gives back the space a full disk needs.
            for partial in self.directory.glob("*_temp*"):
                shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
            reason = plain_reason(error)
            last = self.latest_step
            kept = f"the last good checkpoint (step {last}) is intact" if last is not None else "no checkpoint was kept"
            raise CheckpointError(
                f"could not write a checkpoint at step {step} in {self.directory} ({reason}); {kept}. "
                f"Free some disk space, then resume with: lstm-mnist train --resume {self.run_dir}"
            ) from None

    def restore_latest(self) -> int:
        """Load the newest checkpoint into the model, optimizer and metrics; return its step (0 if none)."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as error:
            raise CheckpointError(f"cannot restore {latest} ({str(error).splitlines()[0]}); "
                                  "the run folder's checkpoint does not match its config.json") from None
        return int(self.optimizer.iterations)
