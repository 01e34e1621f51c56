"""A hostile user against the run machinery: damaged, tampered, shared, full and interrupted run folders.

Every case runs the real CLI in a subprocess, with real signals, real locks,
real symbolic links and real small disks (tmpfs), on a tiny run (512 images,
an 8-unit LSTM, batch 64: 8 steps per epoch). Each ends in one line on
stderr with the right exit status, no traceback, never the CLI's "unexpected
error" fallback, and nothing outside the run folder touched.

| case                                              | exit | test |
|---------------------------------------------------|------|------|
| newest checkpoint truncated / bytes flipped       | 0    | test_a_damaged_newest_checkpoint_falls_back_to_the_older_one |
| every checkpoint damaged                          | 1    | test_when_no_checkpoint_loads_resume_refuses_and_changes_nothing |
| index lost while checkpoint files remain          | 1    | test_a_lost_index_is_refused_not_guessed |
| checkpoints/ or config.json unreadable            | 2    | test_unreadable_checkpoints_and_config_are_refused |
| index naming a path outside checkpoints/          | 1    | test_an_index_pointing_outside_the_folder_is_refused |
| a second process on the same run folder           | 1    | test_a_run_folder_in_use_is_refused_naming_the_process |
| a lock left by a killed process                   | 0    | same |
| symlinks planted in the run folder                | 2    | test_planted_symlinks_are_refused_and_the_outside_is_untouched |
| wrong types or values in a resumed config.json    | 2    | test_wrong_types_in_config_json_are_refused |
| --resume --data with other data                   | 2    | test_resume_with_different_data_is_refused |
| full disk at config.json, model.keras, metrics.json | 1  | test_full_disk_at_each_final_write |
| Ctrl-C / SIGTERM while TensorFlow is imported     | 130 / 143 | test_a_signal_before_the_run_folder_exists |
| Ctrl-C during the test evaluation and saving      | 0    | test_a_signal_while_finishing_finishes |
| a second Ctrl-C while finishing                   | 130  | test_a_second_signal_while_finishing_quits_and_resume_finishes |
| the printed resume command, --log-dir with a space | 143, 0 | test_the_printed_resume_command_can_be_pasted |
| out of memory                                     | 1    | test_out_of_memory_is_one_line |
| an unexpected exception (a bug)                   | 1    | test_an_unexpected_error_is_one_line_with_a_traceback_file |
"""

import contextlib
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

TINY = ["--train-examples", "512", "--val-size", "256", "--test-examples", "256", "--units", "8",
        "--batch-size", "64", "--epochs", "2", "--log-every-steps", "4", "--deterministic", "--seed", "3"]


@pytest.fixture(scope="module")
def module_env(tmp_path_factory, xdg_cache_home):
    """Private caches, and TMPDIR in the test's folder so that a crash's traceback file would be seen."""
    tmp = tmp_path_factory.mktemp("tmpdir")
    return {**os.environ, "KERAS_HOME": str(tmp / "keras-home"), "XDG_CACHE_HOME": str(xdg_cache_home),
            "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def cli(env, *args, cwd=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "lstm_mnist", "train", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300, **kwargs)


def start(env, *args):
    return subprocess.Popen([sys.executable, "-m", "lstm_mnist", "train", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_one_line(result, exit_code: int, *phrases: str) -> str:
    """The run ended with `exit_code` and a last stderr line holding every phrase; never a traceback or a crash."""
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "unexpected error" not in result.stderr, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    for phrase in phrases:
        assert phrase in last_line, (phrase, result.stderr)
    return last_line


def snapshot(folder: Path) -> dict:
    """Every entry under `folder` (links not followed): its kind, bytes and modification time; .lock aside."""
    entries = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(root) / name
            if name == ".lock":
                continue  # its content is the PID of the last process that took the lock
            info = path.lstat()
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else os.readlink(path) \
                if path.is_symlink() else None
            entries[str(path.relative_to(folder))] = (info.st_mode, info.st_mtime_ns, content)
    return entries


def resumable_copy(finished: Path, where: Path) -> Path:
    """A copy of a finished run, as if it had been killed after its last checkpoint."""
    shutil.copytree(finished, where, symlinks=True)
    (where / "metrics.json").unlink()
    (where / "model.keras").unlink()
    return where


def same_weights(run_a: Path, run_b: Path) -> bool:
    a = keras.models.load_model(run_a / "model.keras").get_weights()
    b = keras.models.load_model(run_b / "model.keras").get_weights()
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, module_env):
    """A finished tiny run with TensorBoard: checkpoints ckpt-8 and ckpt-16."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = cli(module_env, *TINY, "--log-dir", run_dir.parent, "--name", run_dir.name)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def finished_quiet(tmp_path_factory, module_env):
    """The same run without TensorBoard, so that only the final files are left to write on a resume."""
    run_dir = tmp_path_factory.mktemp("finished-quiet") / "run"
    result = cli(module_env, *TINY, "--no-tensorboard", "--log-dir", run_dir.parent, "--name", run_dir.name)
    assert result.returncode == 0, result.stderr
    return run_dir


def data_file(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"ckpt-{step}.data-00000-of-00001"


# --- Resume never guesses -----------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path, module_env, finished, damage):
    run_dir = resumable_copy(finished, tmp_path / "run")
    data = data_file(run_dir, 16).read_bytes()
    if damage == "truncated":
        data_file(run_dir, 16).write_bytes(data[:len(data) // 2])
    else:
        data_file(run_dir, 16).write_bytes(data[:1000] + bytes(b ^ 0xFF for b in data[1000:1100]) + data[1100:])
    result = cli(module_env, "--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert "resume: the newest checkpoint does not load: ckpt-16" in result.stdout
    assert "using the one before it, ckpt-8" in result.stdout
    assert f"resumed: {run_dir} at step 8 (epoch 2)" in result.stdout
    assert same_weights(run_dir, finished)  # epoch 2 trained again from ckpt-8: the same weights


def test_when_no_checkpoint_loads_resume_refuses_and_changes_nothing(tmp_path, module_env, finished):
    run_dir = resumable_copy(finished, tmp_path / "run")
    for step in (8, 16):
        data_file(run_dir, step).write_bytes(data_file(run_dir, step).read_bytes()[:100])
    before = snapshot(run_dir)
    assert_one_line(cli(module_env, "--resume", run_dir), 1, "no checkpoint in", "loads: ckpt-16 (",
                    "; ckpt-8 (", "nothing was changed")
    assert snapshot(run_dir) == before  # no event trimmed, no checkpoint deleted, nothing written


def test_a_lost_index_is_refused_not_guessed(tmp_path, module_env, finished):
    run_dir = resumable_copy(finished, tmp_path / "run")
    (run_dir / "checkpoints" / "checkpoint").unlink()
    before = snapshot(run_dir)
    assert_one_line(cli(module_env, "--resume", run_dir), 1, "checkpoints/checkpoint is missing, though checkpoint "
                    "files are there (ckpt-8, ckpt-16); resume will not guess", 'model_checkpoint_path: "ckpt-16"')
    assert snapshot(run_dir) == before


def without_root_overrides(*command):
    """`command` as root without the capabilities that let root read any file, so that modes count."""
    if shutil.which("capsh") is None:
        pytest.skip("capsh is not installed, so root cannot be made to respect file modes")
    return ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c",
            " ".join(shlex.quote(str(part)) for part in command)]


def test_unreadable_checkpoints_and_config_are_refused(tmp_path, module_env, finished):
    if os.geteuid() != 0:
        pytest.skip("dropping capabilities needs root; as another user chmod alone would do")
    run_dir = resumable_copy(finished, tmp_path / "run")
    before = snapshot(run_dir)
    resume = without_root_overrides(sys.executable, "-m", "lstm_mnist", "train", "--resume", run_dir)
    (run_dir / "checkpoints").chmod(0)
    try:
        result = subprocess.run(resume, env=module_env, capture_output=True, text=True, timeout=300)
    finally:
        (run_dir / "checkpoints").chmod(0o755)
    assert_one_line(result, 2, f"cannot read {run_dir / 'checkpoints'} (Permission denied)")
    (run_dir / "config.json").chmod(0)
    try:
        result = subprocess.run(resume, env=module_env, capture_output=True, text=True, timeout=300)
    finally:
        (run_dir / "config.json").chmod(0o644)
    assert_one_line(result, 2, "cannot read its config.json (Permission denied)")
    assert snapshot(run_dir) == before


def test_a_read_only_log_dir_is_refused_before_the_data_is_loaded(tmp_path, module_env):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    train = [sys.executable, "-m", "lstm_mnist", "train", "--log-dir", read_only / "logs", "--epochs", "1",
             "--train-examples", "128"]
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        command = without_root_overrides(*train) if os.geteuid() == 0 else train
        result = subprocess.run(command, env=module_env, capture_output=True, text=True, timeout=300)
    finally:
        read_only.chmod(0o755)
    assert_one_line(result, 2, f"--log-dir {read_only / 'logs'}: cannot write a run folder there (Permission denied)")
    assert result.stdout == ""  # refused before the data is loaded and the model built
    assert list(read_only.iterdir()) == []


def test_an_index_pointing_outside_the_folder_is_refused(tmp_path, module_env, finished):
    outside = tmp_path / "precious"
    outside.mkdir()
    for name in ("ckpt-5.index", "ckpt-5.data-00000-of-00001"):
        (outside / name).write_text("not yours")
    for newest in (str(outside / "ckpt-5"), "../../precious/ckpt-5"):
        run_dir = resumable_copy(finished, tmp_path / f"run-{len(newest)}")
        index = run_dir / "checkpoints" / "checkpoint"
        index.write_text(f'model_checkpoint_path: "{newest}"\nall_model_checkpoint_paths: "ckpt-8"\n'
                         f'all_model_checkpoint_paths: "{newest}"\n')
        before = snapshot(run_dir)
        assert_one_line(cli(module_env, "--resume", run_dir), 1, f"it names '{newest}', which is not a checkpoint "
                        "inside checkpoints/; refusing to read or delete anything outside the run folder")
        assert snapshot(run_dir) == before
    assert sorted(p.name for p in outside.iterdir()) == ["ckpt-5.data-00000-of-00001", "ckpt-5.index"]
    assert all(p.read_text() == "not yours" for p in outside.iterdir())


# --- One process per run folder ----------------------------------------------------------


def test_a_run_folder_in_use_is_refused_naming_the_process(tmp_path, module_env, finished):
    run_dir = resumable_copy(finished, tmp_path / "run")
    # Another process holds the run's lock, exactly as a training run does.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from lstm_mnist.run import RunLock\n"
                               "with RunLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(300)",
                               str(run_dir)], env=module_env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        before = snapshot(run_dir)
        assert_one_line(cli(module_env, "--resume", run_dir), 1,
                        f"{run_dir} is in use by process {holder.pid}, which is still working in it")
        assert snapshot(run_dir) == before
    finally:
        holder.kill()  # SIGKILL: the holder cannot release anything itself
        holder.wait()
    # The kernel dropped the dead holder's lock: the run resumes and finishes.
    result = cli(module_env, "--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert (run_dir / "metrics.json").is_file()


# --- A run folder is a closed world --------------------------------------------------------------


@pytest.mark.parametrize("planted", ["model.keras", ".metrics.json.4242.tmp", "train/events.rewrite", "checkpoints"])
def test_planted_symlinks_are_refused_and_the_outside_is_untouched(tmp_path, module_env, finished, planted):
    run_dir = resumable_copy(finished, tmp_path / "run")
    outside = tmp_path / "outside"
    if planted == "checkpoints":  # the whole folder, moved out and linked back
        shutil.move(run_dir / "checkpoints", outside)
    else:
        outside.write_text("precious")
    before_outside = snapshot(outside) if outside.is_dir() else outside.read_text()
    (run_dir / planted).symlink_to(outside)
    before = snapshot(run_dir)
    assert_one_line(cli(module_env, "--resume", run_dir), 2, f"{run_dir / planted} is a symbolic link")
    assert snapshot(run_dir) == before
    assert (snapshot(outside) if outside.is_dir() else outside.read_text()) == before_outside


# --- Bad input in a resumed run --------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"units": 8.0}, "--units must be an integer, got 8.0 (float)"),
    ({"units": True}, "--units must be an integer, got True (bool)"),
    ({"deterministic": 1}, "--deterministic must be true or false, got 1 (int)"),
    ({"learning_rate": "fast"}, "--learning-rate must be a number, got 'fast' (str)"),
    ({"seed": 2**32}, "--seed must be 0 or more (at most 4,294,967,295), got 4294967296"),
    ({"batch_size": 2**63}, "--batch-size must be a positive integer (at most 1,000,000)"),
    ({"units": None}, "--units must be an integer, got None (NoneType)"),
    ({"no_such_setting": 1}, "unknown setting(s) no_such_setting"),
    ({"data_fingerprint": 5}, "data_fingerprint must be a string"),
])
def test_wrong_types_in_config_json_are_refused(tmp_path, finished, change, message):
    from lstm_mnist.run import RunError, load_run_config

    run_dir = resumable_copy(finished, tmp_path / "run")
    saved = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**saved, **change}))
    with pytest.raises(RunError, match="config.json is not a valid lstm_mnist config") as refused:
        load_run_config(run_dir)
    assert message in str(refused.value)


def test_wrong_types_in_config_json_through_the_cli(tmp_path, module_env, finished):
    run_dir = resumable_copy(finished, tmp_path / "run")
    saved = json.loads((run_dir / "config.json").read_text())
    del saved["units"]
    (run_dir / "config.json").write_text(json.dumps(saved))
    assert_one_line(cli(module_env, "--resume", run_dir), 2, "missing setting(s) units")
    (run_dir / "config.json").write_text("[1, 2]")
    assert_one_line(cli(module_env, "--resume", run_dir), 2, "it holds a list, not a JSON object")


def test_resume_with_different_data_is_refused(tmp_path, module_env, finished, offline_arrays):
    run_dir = resumable_copy(finished, tmp_path / "run")
    keys = ("x_train", "y_train", "x_test", "y_test")
    np.savez(tmp_path / "same.npz", **dict(zip(keys, offline_arrays)))
    changed = [array.copy() for array in offline_arrays]
    changed[0][-1, 0, 0] ^= 1  # one pixel of the last training image, which this run never even reads
    np.savez(tmp_path / "other.npz", **dict(zip(keys, changed)))
    before = snapshot(run_dir)
    assert_one_line(cli(module_env, "--resume", run_dir, "--data", tmp_path / "other.npz"), 2,
                    f"--data {tmp_path / 'other.npz'} is not the data this run was trained on")
    assert snapshot(run_dir) == before
    result = cli(module_env, "--resume", run_dir, "--data", tmp_path / "same.npz")  # byte-identical: accepted
    assert result.returncode == 0, result.stderr


# --- Full disks ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(small_tmpfs):
    """A real 1 MiB tmpfs, and a way to fill it up leaving exactly N free pages of 4 KiB."""
    disk = small_tmpfs("1m")

    def fill(leave_pages: int = 0) -> None:
        filler = disk / ".filler"
        with open(filler, "ab", buffering=0) as f:
            with contextlib.suppress(OSError):  # No space left on device: full
                while f.write(b"\0" * 4096):
                    pass
        os.truncate(filler, max(0, (filler.stat().st_size // 4096 - leave_pages) * 4096))

    return disk, fill


def test_full_disk_at_each_final_write(tmp_path, module_env, finished_quiet, small_disk):
    disk, fill = small_disk
    # config.json, as the run starts: one line, and no folder left to block the --name.
    fill(0)
    assert_one_line(cli(module_env, *TINY, "--log-dir", disk, "--name", "full"), 1,
                    "could not start the run in", "(No space left on device); the folder was removed")
    assert not (disk / "full").exists()
    (disk / ".filler").unlink()

    model_size = (finished_quiet / "model.keras").stat().st_size
    for failing, free_pages in (("model.keras", 0), ("metrics.json", -(-model_size // 4096))):
        run_dir = resumable_copy(finished_quiet, disk / failing)
        fill(free_pages)
        last_line = assert_one_line(cli(module_env, "--resume", run_dir), 1,
                                    f"could not write {run_dir / failing} (No space left on device); "
                                    "the run and its checkpoints are intact")
        assert not (run_dir / "metrics.json").exists()  # not finished, so it can be resumed
        assert not list(run_dir.glob(".*.tmp*"))  # no temporary file left
        if failing == "model.keras":
            assert not (run_dir / "model.keras").exists()  # never a 0-byte or half-written model.keras
        else:
            keras.models.load_model(run_dir / "model.keras")  # the model, complete
        # Moved to a disk with room, the run finishes as the command says.
        moved = shutil.copytree(run_dir, tmp_path / failing, symlinks=True)
        result = cli(module_env, "--resume", moved)
        assert result.returncode == 0, (last_line, result.stderr)
        assert same_weights(moved, finished_quiet)
        shutil.rmtree(run_dir)
        (disk / ".filler").unlink()


# --- Signals at every phase ------------------------------------------------------------------


def wait_for(process, stream: str, prefix: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = getattr(process, stream).readline()
        if line.startswith(prefix):
            return line
        if not line and process.poll() is not None:
            raise AssertionError(f"ended before {prefix!r}: {process.stderr.read()}")
    raise AssertionError(f"no {prefix!r} within {timeout}s")


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_the_run_folder_exists(tmp_path, module_env, signal_number):
    process = start(module_env, *TINY, "--log-dir", tmp_path / "logs")
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.time() + 60
    while process.poll() is None and "libtensorflow" not in maps.read_text() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal_number)  # TensorFlow's libraries are being loaded
    out, err = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    assert_one_line(result, 128 + signal_number, "interrupted before training started; nothing was written")
    assert err.strip().count("\n") == 0, err
    assert not (tmp_path / "logs").exists()


# The test evaluation of 10,000 digits and the saves take long enough to be interrupted.
FINISHING = [*TINY[:4], *TINY[6:], "--test-examples", "0", "--no-tensorboard"]


def test_a_signal_while_finishing_finishes(tmp_path, module_env):
    run_dir = tmp_path / "run"
    process = start(module_env, *FINISHING, "--log-dir", tmp_path, "--name", "run")
    wait_for(process, "stdout", "epoch 2/2")  # the last checkpoint is saved; the test set is next
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "SIGINT (Ctrl-C): finishing: training is done" in err and "Traceback" not in err
    assert "interrupted before training started" not in err
    assert "test accuracy" in out and json.loads((run_dir / "metrics.json").read_text())["steps"] == 16
    keras.models.load_model(run_dir / "model.keras")


def test_a_second_signal_while_finishing_quits_and_resume_finishes(tmp_path, module_env):
    run_dir = tmp_path / "run"
    process = start(module_env, *FINISHING, "--log-dir", tmp_path, "--name", "run")
    wait_for(process, "stdout", "epoch 2/2")
    process.send_signal(signal.SIGINT)
    wait_for(process, "stderr", "SIGINT (Ctrl-C): finishing")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "second signal: quitting now; the last complete checkpoint is kept" in err and "Traceback" not in err
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "model.keras").exists() or (run_dir / "model.keras").stat().st_size > 0
    result = cli(module_env, "--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert "at step 16 (all 2 epochs done)" in result.stdout
    assert not list(run_dir.glob(".*.tmp*"))  # the killed save's temporary file was cleaned up


def test_the_printed_resume_command_can_be_pasted(tmp_path, module_env):
    log_dir = tmp_path / "my runs"
    process = start(module_env, *TINY, "--epochs", "3", "--log-dir", log_dir, "--name", "it's")
    wait_for(process, "stdout", "epoch 1/3")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    last_line = assert_one_line(result, 143, "checkpoint saved. Resume with: lstm-mnist train --resume ")
    command = last_line.split("Resume with: ", 1)[1]
    # Pasted into a shell as it is, with `lstm-mnist` being this Python's module.
    pasted = subprocess.run(command.replace("lstm-mnist", f"'{sys.executable}' -m lstm_mnist", 1), shell=True,
                            env=module_env, capture_output=True, text=True, timeout=300)
    assert pasted.returncode == 0, (command, pasted.stderr)
    assert (log_dir / "it's" / "metrics.json").is_file()


# --- Out of memory, and the last line of defence ----------------------------------------------


def test_out_of_memory_is_one_line(tmp_path, module_env):
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit is not installed")
    result = subprocess.run(["prlimit", "--as=6000000000", sys.executable, "-m", "lstm_mnist", "train", *TINY,
                             "--units", "16384", "--no-tensorboard", "--log-dir", tmp_path / "logs"],
                            env=module_env, capture_output=True, text=True, timeout=300)
    assert_one_line(result, 1, "out of memory (OOM when allocating", "try a smaller --batch-size")
    assert not (tmp_path / "logs").exists()  # the model is built before the run folder is made


def test_an_unexpected_error_is_one_line_with_a_traceback_file(tmp_path, monkeypatch, capsys):
    import tempfile

    from lstm_mnist import cli, train

    def broken(*args, **kwargs):
        raise RuntimeError("a bug deep inside")

    monkeypatch.setattr(train, "train_and_evaluate", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["train", "--log-dir", str(tmp_path / "logs")]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("lstm-mnist train: unexpected error: RuntimeError: a bug deep inside (this is a bug")
    (saved,) = tmp_path.glob("lstm-mnist-traceback-*.txt")
    assert str(saved) in line
    assert "Traceback (most recent call last)" in saved.read_text() and "in broken" in saved.read_text()


def test_no_known_case_reached_the_last_line_of_defence(module_env):
    """Every subprocess above ran with TMPDIR here: none left a traceback file."""
    assert not list(Path(module_env["TMPDIR"]).glob("lstm-mnist-traceback-*"))
