"""The checks behind `Config.validate`: every setting's type and range, with a one-line message per fault.

An instrument, not the lesson: config.py says what each setting is and why
its default; this module says what values it may take. The messages name
the flag as it is typed (--batch-size), because they reach a person through
the CLI (cli.py turns the ValueError into one line and exit status 2) or
through a --resume of a config.json that was edited by hand.
"""

from __future__ import annotations

import dataclasses
import math

from lstm_mnist.config import (
    CELL_TYPES,
    FORGET_BIAS_INITS,
    IMAGE_PIXELS,
    LR_SCHEDULES,
    MNIST_TRAIN_SIZE,
    PIXELS_PER_STEP_CHOICES,
    STRATEGIES,
    TIMESTEPS,
    Config,
    flag,
)


def check_config(config: Config) -> None:
    """Raise ValueError, with a message naming the flag, for a value of the wrong type or out of range.

    The types are checked too, because a config.json read back for
    --resume can hold anything: a bool is not an int (JSON's true would
    otherwise count as 1), and a float is not an int.
    """
    for setting_field in dataclasses.fields(config):
        check_type(setting_field.name, getattr(config, setting_field.name), type(setting_field.default))
    for name, (low, high) in INTEGER_RANGES.items():
        value = getattr(config, name)
        if not low <= value <= high:
            raise ValueError(f"--{flag(name)} must be {describe_range(low, high)}, got {value}")
    if config.cell not in CELL_TYPES:
        raise ValueError(f"--cell must be one of {', '.join(CELL_TYPES)}, got {config.cell!r}")
    if config.cell != "scratch":
        # Keras's own cells have no such options; refusing is clearer than ignoring.
        for name in ("peepholes", "recurrent_projection"):
            if getattr(config, name):
                raise ValueError(f"--{flag(name)} needs --cell scratch (the hand-written LSTM)")
    if config.forget_bias_init not in FORGET_BIAS_INITS:
        raise ValueError(f"--forget-bias-init must be one of {', '.join(FORGET_BIAS_INITS)}, "
                         f"got {config.forget_bias_init!r}")
    if config.forget_bias_init != "one" and config.cell not in ("lstm", "scratch"):
        raise ValueError("--forget-bias-init needs an LSTM (--cell lstm or scratch); "
                         f"a {config.cell} has no forget gate")
    if config.pixels_per_step not in PIXELS_PER_STEP_CHOICES:
        raise ValueError(f"--pixels-per-step must divide the {IMAGE_PIXELS} pixels of an image, "
                         f"so that every timestep is full: one of "
                         f"{', '.join(map(str, PIXELS_PER_STEP_CHOICES))}; got {config.pixels_per_step}")
    if config.permutation_seed and not config.permute_pixels:
        raise ValueError("--permutation-seed needs --permute-pixels (without it the pixels keep their order)")
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(
            f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {config.lr_schedule!r}"
        )
    if not 0 <= config.val_size < MNIST_TRAIN_SIZE:
        raise ValueError(
            f"--val-size must be between 0 and {MNIST_TRAIN_SIZE - 1:,} "
            f"(it leaves the rest of the {MNIST_TRAIN_SIZE:,} images for training), "
            f"got {config.val_size}"
        )
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {config.dropout}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise ValueError(f"--learning-rate must be a positive number, got {config.learning_rate}")
    if not (math.isfinite(config.warmup_epochs) and config.warmup_epochs >= 0):
        raise ValueError(f"--warmup-epochs must be 0 or more, got {config.warmup_epochs}")
    if config.lr_schedule == "cosine" and config.warmup_epochs >= config.epochs:
        raise ValueError(f"--warmup-epochs ({config.warmup_epochs:g}) must be less than --epochs ({config.epochs}): "
                         "the rate would still be rising when training ends; lower --warmup-epochs")
    if not (math.isfinite(config.clip_norm) and config.clip_norm >= 0):
        raise ValueError(f"--clip-norm must be 0 (off) or a positive number, got {config.clip_norm}")
    if config.strategy not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {config.strategy!r}")
    if config.devices:
        if config.strategy != "mirrored":
            raise ValueError(f"--devices needs --strategy mirrored (got --strategy {config.strategy}); "
                             "add --strategy mirrored, or drop --devices")
        from lstm_mnist.distribution import parse_devices  # the devices' vocabulary lives with the strategies

        parse_devices(config.devices)  # ValueError naming the flag
    if not config.log_dir:
        raise ValueError("--log-dir must not be empty; pass a folder such as logs")
    if ("/" in config.name or "\\" in config.name or config.name in (".", "..")
            or not config.name.isprintable()):
        raise ValueError(f"--name must be a plain name without slashes, got {config.name!r}")


# Bounds of every integer setting. The upper bounds are far beyond anything
# MNIST needs; they turn a typo such as --batch-size 1000000000000 into one
# clear line instead of an overflow deep inside TensorFlow.
INTEGER_RANGES = {
    "train_examples": (0, 2**31 - 1),
    "test_examples": (0, 2**31 - 1),
    "units": (1, 16_384),
    "layers": (1, 100),
    "recurrent_projection": (0, 16_384),
    "input_projection": (0, 16_384),
    "epochs": (1, 100_000),
    "batch_size": (1, 1_000_000),
    "seed": (0, 2**32 - 1),  # what keras.utils.set_random_seed accepts
    "pixels_per_step": (1, IMAGE_PIXELS),
    "permutation_seed": (0, 2**32 - 1),  # what numpy.random.default_rng accepts, and the same bound as --seed
    "log_every_steps": (1, 2**31 - 1),
    "summary_every_epochs": (1, 2**31 - 1),
    "checkpoint_every_steps": (0, 2**31 - 1),
    "shift_pixels": (0, TIMESTEPS - 1),  # a shift by the image's height would leave it blank
}


def describe_range(low: int, high: int) -> str:
    """The phrase after "must be" for an integer setting in [low, high] (low is 0 or 1)."""
    if low == 1:
        return f"a positive integer (at most {high:,})"
    return f"0 or more (at most {high:,})"


def check_type(name: str, value, expected: type) -> None:
    """Raise ValueError unless `value` has the setting's type; an int is accepted where a float is expected."""
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = type(value) is expected  # `is`, not isinstance: True is an instance of int
    if not ok:
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[expected]
        raise ValueError(f"--{flag(name)} must be {kind}, got {value!r} ({type(value).__name__})")
