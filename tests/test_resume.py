"""Interruption, resume and reproducibility, through the real CLI in a subprocess.

Every case runs `python -m lstm_mnist train` on a small slice of MNIST
(4,096 images, 64 steps per epoch, a 32-unit LSTM) with --deterministic, so an
interrupted-and-resumed run can be compared bit for bit with one that ran
straight through:

| what happens                          | what the user sees                              | tested by |
|---------------------------------------|-------------------------------------------------|-----------|
| Ctrl-C (SIGINT) / SIGTERM mid-epoch   | step finishes, checkpoint saved, one line with the resume command, exit 130 / 143 | test_signal_then_resume_matches_an_uninterrupted_run |
| a second Ctrl-C                       | exits at once; the last complete checkpoint still resumes | test_second_ctrl_c_quits_at_once_without_harming_the_checkpoint |
| SIGKILL after an epoch                | resume from the epoch-boundary checkpoint; identical result | test_sigkill_at_an_epoch_boundary_then_resume |
| SIGKILL during a checkpoint save      | the index still names a complete checkpoint; identical result | test_sigkill_during_a_save_never_leaves_half_a_checkpoint |
| events written after the checkpoint   | removed on resume: no step appears twice         | the three tests above |
| the disk fills up during a save       | one line, exit 1, the previous checkpoint intact, resumable elsewhere | test_disk_full_during_a_checkpoint |
| the loss becomes NaN/inf              | one line naming the step, exit 1, checkpoints kept | test_nan_loss_stops_with_one_line |
| --resume on a non-run / finished run / conflicting flags | one line, exit 2, nothing written | test_bad_resume_requests |
| killed after the last checkpoint, before model.keras/metrics.json | resume evaluates and writes them; identical result | test_killed_after_the_last_checkpoint_before_the_final_files |
| dropout (random masks) + SIGKILL      | the seed generators' state is in the checkpoint; identical result | test_dropout_masks_continue_after_a_resume |
| same seed twice                       | identical weights and metrics                   | test_signal_then_resume_... (reference vs resumed) |
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SMALL_RUN = ["train", "--train-examples", "4096", "--val-size", "500", "--test-examples", "500",
             "--units", "32", "--batch-size", "64", "--epochs", "3", "--log-every-steps", "5",
             "--deterministic", "--seed", "7"]


def start(run_dir: Path, env, *extra):
    """Start a small training run in the background, writing to exactly `run_dir`."""
    return subprocess.Popen([sys.executable, "-m", "lstm_mnist", *SMALL_RUN, "--log-dir", str(run_dir.parent),
                             "--name", run_dir.name, *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process, prefix: str, timeout: float = 120, stream: str = "stdout") -> None:
    """Read the child's stdout (or stderr) until a line starts with `prefix`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = getattr(process, stream).readline()
        if line.startswith(prefix):
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"the run ended before printing {prefix!r}: {process.stderr.read()}")
    raise AssertionError(f"no line starting with {prefix!r} within {timeout}s")


def finish(process, timeout: float = 120):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def weights(run_dir: Path) -> list:
    import keras

    return keras.models.load_model(run_dir / "model.keras").get_weights()


def assert_same_weights(run_a: Path, run_b: Path) -> None:
    for a, b in zip(weights(run_a), weights(run_b), strict=True):
        np.testing.assert_array_equal(a, b)
    metrics_a = json.loads((run_a / "metrics.json").read_text())
    metrics_b = json.loads((run_b / "metrics.json").read_text())
    for key in ("test_loss", "test_accuracy", "val_loss", "val_accuracy", "train_loss", "train_accuracy", "steps"):
        assert metrics_a[key] == metrics_b[key], key


def assert_no_step_twice(run_dir: Path) -> None:
    """Every TensorBoard scalar in every run has strictly increasing, unique steps."""
    for sub in ("train", "validation"):
        accumulator = EventAccumulator(str(run_dir / sub), size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            steps = [event.step for event in accumulator.Tensors(tag)]
            assert steps == sorted(set(steps)), f"{sub}/{tag} has repeated or backward steps: {steps}"
    accumulator = EventAccumulator(str(run_dir / "train"), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert [e.step for e in accumulator.Tensors("epoch/loss")] == [64, 128, 192]


def resume(run_dir: Path, env):
    return subprocess.run([sys.executable, "-m", "lstm_mnist", "train", "--resume", str(run_dir)],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, xdg_cache_home):
    """The same small run, uninterrupted: what every resumed run must equal."""
    run_dir = tmp_path_factory.mktemp("reference") / "straight"
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg_cache_home), "KERAS_HOME": str(run_dir.parent / "kh"),
           "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    code, _, err = finish(start(run_dir, env))
    assert code == 0, err
    return run_dir


def test_same_seed_twice_gives_identical_weights(tmp_path, cli_env, reference_run):
    code, _, err = finish(start(tmp_path / "again", cli_env))
    assert code == 0, err
    assert_same_weights(tmp_path / "again", reference_run)


@pytest.mark.parametrize("signal_number, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_then_resume_matches_an_uninterrupted_run(tmp_path, cli_env, reference_run, signal_number, exit_code):
    run_dir = tmp_path / "interrupted"
    process = start(run_dir, cli_env)
    wait_for_line(process, "epoch 1/3")  # now inside epoch 2
    process.send_signal(signal_number)
    code, _, err = finish(process)
    assert code == exit_code, err
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.endswith(f"checkpoint saved. Resume with: lstm-mnist train --resume {run_dir}"), err
    assert not (run_dir / "metrics.json").exists()

    resumed = resume(run_dir, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed: {run_dir} at step" in resumed.stdout
    assert_same_weights(run_dir, reference_run)
    assert_no_step_twice(run_dir)


def test_second_ctrl_c_quits_at_once_without_harming_the_checkpoint(tmp_path, cli_env, reference_run):
    run_dir = tmp_path / "impatient"
    process = start(run_dir, cli_env)
    wait_for_line(process, "epoch 1/3")
    process.send_signal(signal.SIGINT)
    # Two signals sent back to back reach Python as one, so wait until the
    # first has been handled; the second then lands during the step or the save.
    wait_for_line(process, "SIGINT (Ctrl-C): stopping", stream="stderr")
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    assert code == 130 and "second signal: quitting now" in err, err
    assert "Traceback" not in err
    resumed = resume(run_dir, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(run_dir, reference_run)


def test_sigkill_at_an_epoch_boundary_then_resume(tmp_path, cli_env, reference_run):
    run_dir = tmp_path / "killed"
    process = start(run_dir, cli_env)
    wait_for_line(process, "epoch 1/3")  # printed after the epoch-1 checkpoint is written
    process.kill()
    process.communicate()
    resumed = resume(run_dir, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 64 (epoch 2)" in resumed.stdout or "at step 128 (epoch 3)" in resumed.stdout
    assert_same_weights(run_dir, reference_run)
    assert_no_step_twice(run_dir)


def test_sigkill_during_a_save_never_leaves_half_a_checkpoint(tmp_path, cli_env, reference_run):
    """Checkpoint every step, and SIGKILL the moment a save's temporary files appear."""
    run_dir = tmp_path / "killed-saving"
    process = start(run_dir, cli_env, "--checkpoint-every-steps", "1")
    checkpoints = run_dir / "checkpoints"
    caught_mid_save = False
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if checkpoints.is_dir() and any("_temp" in p.name for p in checkpoints.iterdir()):
            process.kill()
            caught_mid_save = True
            break
    process.communicate()
    assert caught_mid_save, "the run finished before a save could be interrupted"
    # TensorFlow's temporary files of the interrupted save may remain; the index ignores them.
    resumed = resume(run_dir, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(run_dir, reference_run)
    assert_no_step_twice(run_dir)


def test_disk_full_during_a_checkpoint(tmp_path, cli_env, reference_run, small_tmpfs):
    """A real full disk: a 160 KiB tmpfs holds one checkpoint (~100 KB) but not a second."""
    disk = small_tmpfs("160k")
    run_dir = disk / "run"
    # Without TensorBoard events (the traced graph alone is ~150 KB), so that the checkpoints fill the disk.
    code, _, err = finish(start(run_dir, cli_env, "--no-tensorboard"))
    assert code == 1, err
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert "could not write a checkpoint at step 128" in last_line, err
    assert "(No space left on device)" in last_line
    assert "the last good checkpoint (step 64) is intact" in last_line
    assert json.loads((run_dir / "config.json").read_text())["units"] == 32
    assert not any("_temp" in p.name for p in (run_dir / "checkpoints").iterdir())
    # Move the run to a disk with room, and it finishes as if nothing had happened.
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    resumed = resume(moved, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(moved, reference_run)


def test_nan_loss_stops_with_one_line(tmp_path, cli_env):
    run_dir = tmp_path / "diverged"
    code, _, err = finish(start(run_dir, cli_env, "--learning-rate", "3e38", "--clip-norm", "0",
                                "--checkpoint-every-steps", "1", "--lr-schedule", "constant"))
    assert code == 1, err
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert "became" in last_line and "training stopped" in last_line and "try a lower --learning-rate" in last_line
    assert (run_dir / "checkpoints" / "checkpoint").is_file()
    assert not (run_dir / "model.keras").exists()


def test_bad_resume_requests(tmp_path, run_cli, reference_run):
    (tmp_path / "not-a-run").mkdir()
    listing_before = sorted(p.name for p in reference_run.iterdir())
    cases = [
        (["--resume", tmp_path / "nowhere"], "no such folder"),
        (["--resume", tmp_path / "not-a-run"], "not a run folder (it has no config.json)"),
        (["--resume", reference_run], "this run already finished"),
    ]
    partial = tmp_path / "partial"
    shutil.copytree(reference_run, partial)
    (partial / "metrics.json").unlink()
    cases.append((["--resume", partial, "--units", "64"], "--units 64 (the run used 32)"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"units": "many"')
    cases.append((["--resume", tmp_path / "broken"], "config.json is not a valid lstm_mnist config"))
    for argv, message in cases:
        result = run_cli("train", *argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.count("\n") == 1 and message in result.stderr, (argv, result.stderr)
    assert sorted(p.name for p in reference_run.iterdir()) == listing_before


def test_dropout_masks_continue_after_a_resume(tmp_path, cli_env):
    """Dropout draws its masks from Keras seed generators; their state is checkpointed too."""
    dropout = ("--layers", "2", "--dropout", "0.3", "--epochs", "2")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    code, _, err = finish(start(straight, cli_env, *dropout))
    assert code == 0, err
    process = start(killed, cli_env, *dropout)
    wait_for_line(process, "epoch 1/2")
    process.kill()
    process.communicate()
    resumed = resume(killed, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 64 (epoch 2)" in resumed.stdout
    assert_same_weights(killed, straight)


def test_killed_after_the_last_checkpoint_before_the_final_files(tmp_path, cli_env, reference_run):
    """The last epoch's checkpoint is on disk, model.keras and metrics.json are not: resume only finishes."""
    run_dir = tmp_path / "almost-done"
    shutil.copytree(reference_run, run_dir)
    (run_dir / "metrics.json").unlink()
    (run_dir / "model.keras").unlink()
    resumed = resume(run_dir, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 192 (all 3 epochs done)" in resumed.stdout
    assert_same_weights(run_dir, reference_run)
    assert_no_step_twice(run_dir)
