"""A finished run, used again: `load_run` gives back its model and Config, `preprocess` readies images for it.

    import lstm_mnist
    model, config = lstm_mnist.load_run("logs/20261123-104151-lstm128")
    x = lstm_mnist.preprocess(images, config)  # uint8 0..255 or float 0..1, [28, 28] or [N, 28, 28]
    probabilities = keras.ops.softmax(model(x))   # (N, T, F) -> (N, 10); (N, 28, 28) by default

`load_run` refuses, in one line (a `RunFolderError`), a folder that is not a
run, a run that has not finished (and says whether it is still training or
can be resumed), and a run it cannot read back: damaged files, or settings
written by an incompatible version of lstm_mnist. It registers the
hand-written cell first, so a `--cell scratch` model loads too, and it imports
TensorFlow without the start-up chatter (quiet.py).

`preprocess` exists because the model expects floats in [0, 1] and MNIST's
files hold bytes 0..255: fed raw bytes, the network sees every pixel 255 times
too bright and answers nonsense without complaint (7 2 1 0 4 came out as
3 2 1 5 6). It converts what it can and refuses, in one line, what it cannot.

Reading the folder needs no TensorFlow: `read_finished_run` checks everything
but the model, so the commands refuse a bad folder before spending seconds on
the import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lstm_mnist.config import FEATURES, TIMESTEPS, Config
from lstm_mnist.errors import OneLineError, plain_reason
from lstm_mnist.run import DATA_FINGERPRINT, lock_holder, resume_command, resume_refusal

# model.keras and metrics.json are written by run.py's Run.finish; metrics.json last.
MODEL_FILE, METRICS_FILE, CONFIG_FILE = "model.keras", "metrics.json", "config.json"
# A config.json or metrics.json is a few kilobytes; anything far larger is not ours.
SMALL_FILE_LIMIT = 1 << 20


class RunFolderError(OneLineError):
    """A folder that `load_run` cannot use: not a run, unfinished, damaged, or from an incompatible version."""

    exit_code = 2


class ImageError(OneLineError, ValueError):
    """Images of the wrong shape, type or range (a ValueError too, for library users who catch those)."""

    exit_code = 2


class SavedRun(NamedTuple):
    """A finished run read back: `model, config = load_run(run_dir)`."""

    model: object  # keras.Model; not annotated as such so that this module does not import Keras
    config: Config


class RunRecord(NamedTuple):
    """What a finished run's folder says about it, read without TensorFlow."""

    run_dir: Path
    config: Config
    metrics: dict
    data_fingerprint: str | None


def load_run(run_dir) -> SavedRun:
    """The trained model of a finished run and the Config it was trained with.

    run_dir: a run folder, e.g. "logs/20261123-104151-lstm128". The model
    outputs logits, float32 [B, 10], for float32 [B, 28, 28] inputs in [0, 1]
    (use `preprocess`). Raises RunFolderError, one line, for anything but a
    finished run that loads.
    """
    record = read_finished_run(run_dir)
    return SavedRun(load_model(record.run_dir, record.config), record.config)


def read_finished_run(run_dir) -> RunRecord:
    """config.json and metrics.json of a finished run, checked; RunFolderError (one line) otherwise. Only reads."""
    run_dir = Path(run_dir)
    check_is_folder(run_dir)
    if (run_dir / CONFIG_FILE).exists() and not is_file(run_dir / CONFIG_FILE):
        raise RunFolderError(f"{run_dir / CONFIG_FILE} is not a regular file; this is not a run lstm-mnist train made")
    if not is_file(run_dir / CONFIG_FILE):
        runs_inside = [child.name for child in sorted_children(run_dir) if is_file(child / CONFIG_FILE)]
        if runs_inside:
            raise RunFolderError(f"{run_dir} is a folder of runs, not a run; pass one of them, such as "
                                 f"{run_dir / runs_inside[-1]} (lstm-mnist runs {run_dir} lists them all)")
        raise RunFolderError(f"{run_dir} is not a run folder (it has no {CONFIG_FILE}); pass a folder that "
                             "lstm-mnist train made, such as logs/20261123-104151-lstm128")
    config, fingerprint = read_config(run_dir)
    if not is_file(run_dir / METRICS_FILE):
        raise RunFolderError(unfinished_message(run_dir))
    metrics = read_metrics(run_dir)
    if not is_file(run_dir / MODEL_FILE):
        if (run_dir / MODEL_FILE).exists():
            raise RunFolderError(f"{run_dir / MODEL_FILE} is not a regular file, so it is not the model the run saved")
        raise RunFolderError(f"{run_dir}: its {MODEL_FILE} is missing (the run finished, but the model "
                             "was deleted or moved); there is nothing to load")
    return RunRecord(run_dir, config, metrics, fingerprint)


def load_model(run_dir: Path, config: Config):
    """Load <run_dir>/model.keras, quietly, with the hand-written cell registered; RunFolderError if it fails.

    config: the run's own, which says the input the model must take: [None, T, F].
    """
    from lstm_mnist.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    from lstm_mnist.lstm_cell import ScratchLSTMCell  # registers "lstm_mnist>ScratchLSTMCell" with Keras

    path = run_dir / MODEL_FILE
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of an empty or cut-off file
        raise RunFolderError(f"{path} is not a Keras model file (a .keras file is a zip archive, and this one is "
                             "not: empty, cut short or overwritten); the run's model is lost: train it again")
    try:
        # safe_mode (the default, said out loud): a model file holding Python code (a Lambda layer) is refused.
        model = keras.models.load_model(path, compile=False, safe_mode=True,
                                        custom_objects={"ScratchLSTMCell": ScratchLSTMCell})
    except MemoryError:
        raise RunFolderError(f"{path} is too large to load into memory; it is not a model this package wrote",
                             exit_code=1) from None
    except Exception as error:  # a damaged zip or a foreign file fails anywhere in Keras: ValueError, KeyError, ...
        raise RunFolderError(f"{path} cannot be loaded ({short_reason(error)}); it is damaged, or it was "
                             "written by an incompatible version of lstm_mnist or Keras") from None
    expected = (None, config.timesteps, config.features)
    if tuple(model.input_shape) != expected or tuple(model.output_shape)[-1:] != (10,):
        raise RunFolderError(f"{path} is not an lstm_mnist model: it maps {model.input_shape} to "
                             f"{model.output_shape}, not {expected} to (None, 10)")
    return model


# ---------------------------------------------------------------------------
# The files of a run folder, read as untrusted input
# ---------------------------------------------------------------------------


def check_is_folder(run_dir: Path) -> None:
    try:
        mode = os.stat(run_dir).st_mode  # follows a symbolic link to a run: reading through one is harmless
    except FileNotFoundError:
        raise RunFolderError(f"{run_dir}: no such folder; pass a run folder such as "
                             "logs/20261123-104151-lstm128 (lstm-mnist runs lists them)") from None
    except OSError as error:
        raise RunFolderError(f"{run_dir}: cannot read it ({plain_reason(error)})") from None
    if not stat.S_ISDIR(mode):
        raise RunFolderError(f"{run_dir} is a file, not a run folder; pass the folder that holds "
                             f"{MODEL_FILE} and {CONFIG_FILE}")


def is_file(path: Path) -> bool:
    """True for a regular file (through symbolic links); False for anything else, or an unreadable path."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def sorted_children(folder: Path) -> list[Path]:
    try:
        return sorted(Path(entry.path) for entry in os.scandir(folder))
    except OSError:
        return []


def read_small_json(path: Path, what: str):
    """The JSON value in `path`, a file of at most SMALL_FILE_LIMIT bytes; RunFolderError saying why not."""
    try:
        # O_NONBLOCK: a FIFO planted under the name cannot hang the read; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise RunFolderError(f"{path} is not a regular file, so it does not hold {what} of a run")
            data = f.read(SMALL_FILE_LIMIT + 1)
    except OSError as error:
        raise RunFolderError(f"{path}: cannot read {what} ({plain_reason(error)})") from None
    if len(data) > SMALL_FILE_LIMIT:
        raise RunFolderError(f"{path} is larger than {SMALL_FILE_LIMIT >> 20} MiB, far too large to hold "
                             f"{what} of an lstm_mnist run")
    try:
        return json.loads(data)
    except ValueError as error:  # not JSON, or not UTF-8
        raise RunFolderError(f"{path} is damaged: it is not JSON ({str(error).splitlines()[0]})") from None


def config_from_json(saved) -> tuple[Config, str | None]:
    """Config and data fingerprint from config.json's content; ValueError (a message for a person) if invalid.

    A setting this version does not know means a newer (or foreign) version
    wrote the run, and is refused. A setting that is missing was added to
    lstm_mnist after the run was made: it takes its default, which by this
    package's rule is the behaviour runs had before the setting existed.
    """
    if not isinstance(saved, dict):
        raise ValueError(f"it holds a {type(saved).__name__}, not a JSON object")
    saved = dict(saved)
    fingerprint = saved.pop(DATA_FINGERPRINT, None)
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise ValueError(f"{DATA_FINGERPRINT} must be a string")
    known = {field.name for field in dataclasses.fields(Config)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ValueError(f"it has setting(s) this version of lstm_mnist does not know: {', '.join(unknown)}; "
                         "the run was made by an incompatible version")
    config = Config(**saved)
    config.validate()
    return config, fingerprint


def read_config(run_dir: Path) -> tuple[Config, str | None]:
    path = run_dir / CONFIG_FILE
    try:
        return config_from_json(read_small_json(path, "its settings"))
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"{path} is not a valid lstm_mnist config ({error})") from None


def read_metrics(run_dir: Path) -> dict:
    path = run_dir / METRICS_FILE
    metrics = read_small_json(path, "the final numbers")
    valid = isinstance(metrics, dict) and all(
        isinstance(metrics.get(key), (int, float)) and not isinstance(metrics.get(key), bool)
        for key in ("test_accuracy", "test_loss", "epochs", "seconds"))
    if not valid:
        raise RunFolderError(f"{path} is damaged: it lacks the numbers a finished run writes "
                             "(test_accuracy, test_loss, epochs, seconds)")
    return metrics


def unfinished_message(run_dir: Path) -> str:
    """Why an unfinished run cannot be loaded, and what to do that will work: wait, resume, or start anew."""
    holder = lock_holder(run_dir)
    if holder is not None:
        return (f"{run_dir} is still training (process {holder} is working in it); "
                f"wait for it to finish, then try again")
    refusal = resume_refusal(run_dir)
    if refusal is None:
        return (f"{run_dir} did not finish (it has no {METRICS_FILE}), so it has no final model; "
                f"finish it with: {resume_command(run_dir)}")
    return (f"{run_dir} did not finish (it has no {METRICS_FILE}) and cannot be resumed "
            f"({refusal.split(': ', 1)[-1]})")


def short_reason(error: BaseException, limit: int = 160) -> str:
    text = plain_reason(error) if isinstance(error, OSError) else (str(error).strip().splitlines() or [""])[0]
    text = text or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------
# Images, readied for the model
# ---------------------------------------------------------------------------


def preprocess(images, config: Config | None = None) -> np.ndarray:
    """Images as the model reads them: float32 [N, 28, 28] in [0, 1], row r of each image = timestep r.

    config: a run's Config. Given, the images are cut as that run reads them
    (its --pixels-per-step and --permute-pixels): float32 [N, T, F]. Without
    it, they are the default reading, [N, 28, 28], as every run reads unless
    told otherwise.

    images: one image [28, 28] or a batch [N, 28, 28], as
      - integers 0..255 (uint8, as MNIST's files and most image libraries
        hold them; divided by 255 here), or
      - floats in [0, 1] (as `lstm_mnist.data` and the training set hold them),
    white (1 / 255) digit on black (0), as in MNIST. Raises ImageError (a
    ValueError) for anything else, saying what to do: floats up to 255 (raw
    bytes stored as floats), a flattened [N, 784], NaN, or a non-numeric type.
    """
    array = np.asarray(images)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageError(f"images must be integers 0..255 or floats in [0, 1], got dtype {array.dtype}")
    expected = (TIMESTEPS, FEATURES)
    if array.ndim == 2 and array.shape == expected:
        array = array[np.newaxis]  # (28, 28) -> (1, 28, 28)
    if array.ndim != 3 or array.shape[1:] != expected:
        hint = ""
        if array.ndim >= 1 and array.shape[-1] == TIMESTEPS * FEATURES:
            hint = f"; flattened images can be reshaped with images.reshape(-1, {TIMESTEPS}, {FEATURES})"
        elif array.ndim == 4 and array.shape[1:3] == expected and array.shape[3] == 1:
            hint = "; drop the channel axis with images[..., 0]"
        raise ImageError(f"images must have shape [{TIMESTEPS}, {FEATURES}] or [N, {TIMESTEPS}, {FEATURES}], "
                         f"got {list(array.shape)}{hint}")
    if array.shape[0] == 0:
        raise ImageError("no images: the array holds 0 images")
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageError(f"integer images must hold pixel values 0..255, got values from {low} to {high}")
        return read_as(array.astype(np.float32) / np.float32(255.0), config)
    if not np.all(np.isfinite(array)):
        raise ImageError("images hold NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        advice = ("these look like bytes 0..255 stored as floats: divide by 255, or pass them as uint8"
                  if low >= 0.0 and high <= 255.0 else "scale them into [0, 1]")
        raise ImageError(f"float images must be in [0, 1] (black 0, white ink 1), got values from "
                         f"{low:g} to {high:g}; {advice}")
    return read_as(array.astype(np.float32), config)


def read_as(images: np.ndarray, config: Config | None) -> np.ndarray:
    """float32 [N, 28, 28] in [0, 1] -> as `config`'s run reads them (as_read_by); unchanged without a config."""
    return images if config is None else as_read_by(config, images)


def as_read_by(config: Config, images: np.ndarray) -> np.ndarray:
    """float32 [N, 28, 28] in [0, 1] -> float32 [N, T, F]: cut as data.split_mnist cuts a run's images."""
    from lstm_mnist.data import cut_into_timesteps, pixel_order

    return cut_into_timesteps(images, config.pixels_per_step, pixel_order(config.permute_pixels,
                                                                           config.permutation_seed))
