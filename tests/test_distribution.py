"""Several replicas (distribution.py) train what one device trains; checkpoints cross strategies; two workers.

The reference is a run on one CPU, in this process. Against it: the same run mirrored over two
logical CPU devices, and two workers of a MultiWorkerMirroredStrategy on 127.0.0.1, whose final
weights must match it to float32 tolerance (the replicas add the same numbers in another order);
runs stopped under one strategy and resumed under the other must match it too. TensorFlow can
split a CPU only before it sets up its devices, which this session did long ago, so the
two-device runs and the workers run in fresh processes (tests/train_in_one_process.py), with
time limits. Timings are never asserted: scripts/benchmark.py --only strategies measures them.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from lstm_mnist import distribution
from lstm_mnist.cli import main
from lstm_mnist.config import Config
from lstm_mnist.errors import OneLineError
from lstm_mnist.run import Run, load_run_config, merge_resume_flags
from lstm_mnist.saved import load_run
from lstm_mnist.train import train_and_evaluate

ROOT = Path(__file__).resolve().parent.parent
# 201 images in batches of 32: 7 steps an epoch, the last of 9 images (shares of 4 and 5 on two replicas).
TINY = Config(train_examples=201, val_size=64, test_examples=64, units=8, batch_size=32, epochs=2,
              checkpoint_every_steps=3, seed=3, tensorboard=False)
TINY_FLAGS = ["--train-examples", "201", "--val-size", "64", "--test-examples", "64", "--units", "8",
              "--batch-size", "32", "--epochs", "2", "--checkpoint-every-steps", "3", "--seed", "3"]
TWO_CPUS = ["--strategy", "mirrored", "--devices", "CPU:0,CPU:1"]
LIMIT = 240  # seconds a process may take before the test gives up on it (a run takes ~10 s)


def environment(home: Path, xdg_cache_home: Path, **extra) -> dict:
    return {**os.environ, "KERAS_HOME": str(home / "no-keras-home"), "XDG_CACHE_HOME": str(xdg_cache_home),
            "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def train_here(config: Config, cache_dir: Path, monkeypatch, resume_dir: Path | None = None, log=lambda line: None):
    monkeypatch.setenv("KERAS_HOME", str(cache_dir / "no-keras-home"))
    return train_and_evaluate(config, log=log, cache_dir=cache_dir, resume_dir=resume_dir)


def crash_after_step(monkeypatch, step: int):
    """Make a run die right after its checkpoint of `step` is on the disk (as if killed then)."""

    class Crash(Exception):
        pass

    save = Run.save

    def save_then_crash(run):
        save(run)
        if run.step == step:
            raise Crash

    monkeypatch.setattr(Run, "save", save_then_crash)
    return Crash


def assert_same_training(run_dir: Path, reference) -> None:
    """The run in run_dir ended where the one-device reference run did, to float32 tolerance."""
    model, config = load_run(run_dir)
    for got, expected in zip(model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_loss", "train_accuracy", "val_loss", "test_loss", "test_accuracy"):
        assert metrics[key] == pytest.approx(reference.metrics[key], rel=1e-4, abs=1e-5), key
    assert metrics["steps"] == reference.metrics["steps"] == 14


@pytest.fixture(scope="module")
def one_cpu(tmp_path_factory, cache_dir):
    """The reference: TINY on this process's one CPU (--strategy default)."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        log_dir = tmp_path_factory.mktemp("one-cpu")
        return train_here(dataclasses.replace(TINY, log_dir=str(log_dir), name="one-cpu"), cache_dir, monkeypatch)
    finally:
        monkeypatch.undo()


@pytest.fixture(scope="module")
def crashed_on_one_cpu(tmp_path_factory, cache_dir):
    """TINY on this process's one CPU, killed right after its checkpoint of step 9 (in epoch 2)."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        log_dir = tmp_path_factory.mktemp("one-cpu-crashed")
        with pytest.raises(crash_after_step(monkeypatch, 9)):
            train_here(dataclasses.replace(TINY, log_dir=str(log_dir), name="crashed"), cache_dir, monkeypatch)
        return log_dir / "crashed"
    finally:
        monkeypatch.undo()


@pytest.fixture(scope="module")
def two_cpus(tmp_path_factory, xdg_cache_home, one_cpu, crashed_on_one_cpu):
    """In one fresh process split into two logical CPUs: TINY mirrored; the same, killed after step 9; two
    refusals; and the run crashed on one CPU, resumed."""
    log_dir = tmp_path_factory.mktemp("two-cpus")
    flags = [*TINY_FLAGS, *TWO_CPUS, "--log-dir", str(log_dir)]
    runs = [[*flags, "--name", "mirrored"],  # TensorBoard on: its summaries work on a mirrored model too
            ["--crash-after-step", "9", *flags, "--no-tensorboard", "--name", "crashed"],
            [*flags, "--batch-size", "1", "--name", "batch-of-one"],
            [*flags, "--mixed-precision", "--name", "float16"],
            ["--resume", str(crashed_on_one_cpu), *TWO_CPUS]]
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "train_in_one_process.py"), *map(json.dumps, runs)],
                            env=environment(tmp_path_factory.mktemp("home"), xdg_cache_home), capture_output=True,
                            text=True, timeout=LIMIT)
    return log_dir, result


def test_two_logical_cpus_train_what_one_cpu_trains(one_cpu, two_cpus):
    log_dir, result = two_cpus
    assert [line for line in result.stdout.splitlines() if line.startswith("exit:")] == \
        ["exit: 0", "exit: -9", "exit: 2", "exit: 2", "exit: 0"], result.stdout + result.stderr
    assert "strategy: mirrored, 2 replicas on CPU:0, CPU:1; each batch of 32 is split into 2 shares of about 16" \
        in result.stdout
    assert_same_training(log_dir / "mirrored", one_cpu)
    assert list((log_dir / "mirrored" / "train").glob("events.out.tfevents.*"))  # TensorBoard was written


def test_refusals_on_two_logical_cpus_are_one_line_and_write_nothing(two_cpus):
    log_dir, result = two_cpus
    errors = [line for line in result.stderr.splitlines() if line.startswith("lstm-mnist train:")]
    assert errors == [
        "lstm-mnist train: error: --batch-size 1 is smaller than the 2 replicas, and each replica reads its share "
        "of every batch: use a --batch-size of at least 2, or fewer devices",
        "lstm-mnist train: error: --mixed-precision needs a GPU: on a CPU float16 is slower than float32, and "
        "TensorFlow finds no GPU here; drop the flag"], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in log_dir.iterdir() if path.is_dir()) == ["crashed", "mirrored"]


def test_a_checkpoint_written_on_two_logical_cpus_resumes_on_one(one_cpu, two_cpus, cache_dir, monkeypatch):
    log_dir, _ = two_cpus
    crashed = log_dir / "crashed"
    saved, _ = load_run_config(crashed)
    assert saved.strategy == "mirrored" and saved.devices == "CPU:0,CPU:1"  # as the run was started
    config = merge_resume_flags(saved, {})  # where it runs comes from the command line: here, nothing
    assert (config.strategy, config.devices) == ("auto", "")
    lines = []
    train_here(config, cache_dir, monkeypatch, resume_dir=crashed, log=lines.append)
    assert any(line.startswith(f"resumed: {crashed} at step 9 (epoch 2)") for line in lines), lines
    assert not any(line.startswith("strategy:") for line in lines)  # auto, without GPUs: one device
    assert_same_training(crashed, one_cpu)


def test_a_checkpoint_written_on_one_cpu_resumes_on_two_logical_cpus(one_cpu, crashed_on_one_cpu, two_cpus):
    _, result = two_cpus
    printed = result.stdout.split("\nexit: ")[4]  # by the fifth run, after the fourth one's exit status
    assert "strategy: mirrored, 2 replicas on CPU:0, CPU:1" in printed
    assert f"resumed: {crashed_on_one_cpu} at step 9 (epoch 2)" in printed and "epoch 2/2" in printed
    assert_same_training(crashed_on_one_cpu, one_cpu)


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (bound to port 0, all at once, then released for the workers)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for one in sockets:
            one.bind(("127.0.0.1", 0))
        return [one.getsockname()[1] for one in sockets]
    finally:
        for one in sockets:
            one.close()


def run_workers(commands: list[list[str]], tmp_path: Path, xdg_cache_home: Path, phase: str) -> list[tuple[int, str]]:
    """Start one process per command, worker i of len(commands) on 127.0.0.1; wait for all (killing all on a
    timeout); their exit statuses and outputs. Each worker's TMPDIR is tmp_path/tmp-<i>, where a worker that
    is not the chief makes its temporary folder."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(len(commands))]
    processes = []
    for index, command in enumerate(commands):
        temporary = tmp_path / f"tmp-{index}"
        temporary.mkdir(exist_ok=True)
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, env=environment(tmp_path, xdg_cache_home, TF_CONFIG=tf_config,
                                                                     TMPDIR=str(temporary))))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=LIMIT)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"{phase}: the workers did not finish within {LIMIT} s")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    if any(sign in output for output in outputs
           for sign in ("Could not start gRPC server", "Address already in use", "Failed to bind")):
        pytest.skip(f"{phase}: a worker could not open its gRPC port on 127.0.0.1: {outputs}")
    return [(process.returncode, output) for process, output in zip(processes, outputs)]


def test_two_workers_on_this_machine_train_what_one_cpu_trains_and_only_the_chief_writes(one_cpu, tmp_path,
                                                                                         xdg_cache_home):
    """MultiWorkerMirroredStrategy: two processes, one CPU each, over gRPC on 127.0.0.1, the same command for both.

    The chief dies right after its checkpoint of step 9; the other worker loses contact and says so in one line;
    both are started again with --resume, finish, and end where one CPU does.
    """
    flags = [*TINY_FLAGS, "--strategy", "multi_worker", "--log-dir", str(tmp_path / "logs"), "--name", "two-workers"]
    train = [sys.executable, "-m", "lstm_mnist", "train"]
    chief_crashing = [sys.executable, str(ROOT / "tests" / "train_in_one_process.py"),
                      json.dumps(["--crash-after-step", "9", *flags])]
    (chief_status, chief), (other_status, other) = run_workers([chief_crashing, train + flags], tmp_path,
                                                               xdg_cache_home, "the first start")
    assert chief_status == 0 and "exit: -9" in chief, chief  # the helper reports the crash it made
    assert "strategy: multi_worker, 2 replicas in all; this is worker 0 of 2 (the chief), on CPU:0" in chief
    assert "this is worker 1 of 2, on CPU:0" in other and "not the chief" in other
    errors = [line for line in other.splitlines() if line.startswith("lstm-mnist train:")]
    assert other_status == 1 and len(errors) == 1 and errors[0].startswith(
        "lstm-mnist train: error: worker 1 of 2 lost contact with the others (TensorFlow's "), other
    assert not any((tmp_path / "tmp-1").iterdir())  # its temporary folder went with it

    run_dir = tmp_path / "logs" / "two-workers"
    resume = train + ["--resume", str(run_dir)]  # auto: TF_CONFIG names two workers, so multi_worker
    (chief_status, chief), (other_status, other) = run_workers([resume, resume], tmp_path, xdg_cache_home,
                                                               "the resumed start")
    assert chief_status == other_status == 0, chief + other
    assert f"resumed: {run_dir} at step 9 (epoch 2)" in chief and "at step 9 (epoch 2)" in other
    # Only the chief wrote into --log-dir, TensorBoard included; the other's temporary folders are gone.
    assert [path.name for path in (tmp_path / "logs").iterdir()] == ["two-workers"]
    assert {"config.json", "metrics.json", "model.keras", "checkpoints", "train", "validation", "test"} \
        <= {path.name for path in run_dir.iterdir()}
    assert list((run_dir / "train").glob("events.out.tfevents.*"))
    assert not any((tmp_path / "tmp-1").iterdir())
    assert_same_training(run_dir, one_cpu)


MIXED_PRECISION_ON_TWO_CPUS = """
import json, keras, numpy as np, tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
from lstm_mnist import mixed_precision
from lstm_mnist.config import Config
from lstm_mnist.model import build_model
from lstm_mnist.steps import Means, several_steps_per_call
from lstm_mnist.train import learning_rate_schedule
config = Config(units=8, clip_norm=0.2, learning_rate=1e-2)
x = np.random.default_rng(0).random((9, 16, 28, 28), dtype=np.float32)  # 9 batches of 16 images
y = np.random.default_rng(1).integers(0, 10, (9, 16)).astype(np.int32)
found = {}
for name, strategy in (("one", tf.distribute.get_strategy()), ("two", tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]))):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        with mixed_precision.policy(True):
            model = build_model(config)
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(config, 10))
        optimizer, step = mixed_precision.loss_scaled_step(model, optimizer, config.clip_norm)
        optimizer.build(model.trainable_variables)
    per_step = several_steps_per_call(step, Means(), optimizer, model, strategy)(x, y)[0].numpy()
    found[name] = {"per_step": per_step.tolist(), "scale": float(optimizer.dynamic_scale.numpy()),
                   "weights": [w.tolist() for w in model.get_weights()]}
print("FOUND " + json.dumps(found))
"""


def test_the_loss_scaled_float16_step_on_two_logical_cpus_follows_one_cpu(tmp_path, xdg_cache_home):
    """--mixed-precision's step under MirroredStrategy (on a GPU in real use; here through the CPU's float16 kernels)."""
    result = subprocess.run([sys.executable, "-c", MIXED_PRECISION_ON_TWO_CPUS], env=environment(tmp_path, xdg_cache_home),
                            capture_output=True, text=True, timeout=LIMIT)
    assert result.returncode == 0, result.stderr
    found = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("FOUND "))[6:])
    one, two = found["one"], found["two"]
    np.testing.assert_allclose(two["per_step"], one["per_step"], rtol=1e-3, atol=1e-4)  # loss, accuracy, norm, rate
    for got, expected in zip(two["weights"], one["weights"], strict=True):
        np.testing.assert_allclose(got, expected, atol=2e-4)  # float16 products, added in another order
    assert two["scale"] == one["scale"] == 2.0**15  # no step overflowed, on either


# --- A worker that is not the chief -------------------------------------------------------------


def test_a_worker_that_is_not_the_chief_writes_only_into_a_temporary_folder_it_deletes(tmp_path, cache_dir,
                                                                                         monkeypatch):
    import tempfile

    temporary = tmp_path / "tmp"  # where the worker's temporary folders go
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    config = Config(train_examples=96, val_size=32, test_examples=32, units=8, batch_size=32, epochs=1,
                    checkpoint_every_steps=1, tensorboard=False, log_dir=str(tmp_path / "logs"), name="run")
    with pytest.MonkeyPatch.context() as patch:  # the chief's run, killed after its first step's checkpoint
        with pytest.raises(crash_after_step(patch, 1)):
            train_here(config, cache_dir, patch)
    before = {path: path.read_bytes() for path in (tmp_path / "logs").rglob("*") if path.is_file()}
    monkeypatch.setattr(distribution, "is_chief", lambda strategy: False)
    lines = []
    train_here(config, cache_dir, monkeypatch, resume_dir=tmp_path / "logs" / "run", log=lines.append)
    assert any(line.startswith("resumed: ") and line.endswith("at step 1 (epoch 1); removed 0 TensorBoard events "
                                                              "written after that checkpoint") for line in lines), lines
    assert lines[-1].endswith("; this worker is done, and the chief keeps the run's files")
    # The run folder it resumed from is as it was, byte for byte; a new run leaves nothing under --log-dir.
    assert {path: path.read_bytes() for path in (tmp_path / "logs").rglob("*") if path.is_file()} == before
    train_here(dataclasses.replace(config, name="new"), cache_dir, monkeypatch)
    assert not (tmp_path / "logs" / "new").exists() and not any(temporary.iterdir())
    # A worker that fails deletes its folder too.
    with pytest.raises(crash_after_step(monkeypatch, 2)):
        train_here(dataclasses.replace(config, name="failing"), cache_dir, monkeypatch)
    assert not (tmp_path / "logs" / "failing").exists() and not any(temporary.iterdir())


# --- Bad flags and a bad TF_CONFIG: one line, exit 2, nothing written ------------------------------------

WORKERS = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}
BAD = [
    (["--strategy", "mirroed"], None, "invalid choice: 'mirroed'", "did you mean mirrored?"),
    (["--devices", "CPU:0,CPU:1"], None, "--devices needs --strategy mirrored (got --strategy auto)", ""),
    (["--strategy", "mirrored", "--devices", "GPU0"], None, "--devices takes devices separated by commas", "'GPU0'"),
    (["--strategy", "mirrored", "--devices", "CPU:0,cpu:0"], None, "--devices names a device twice", ""),
    (["--strategy", "mirrored", "--devices", "CPU:0,GPU:0"], None, "--devices mixes CPUs and GPUs", ""),
    (["--strategy", "mirrored", "--devices", "CPU:0,CPU:64"], None, "at most 64 logical devices", ""),
    (["--strategy", "multi_worker"], None, "--strategy multi_worker needs the TF_CONFIG environment variable", ""),
    (["--strategy", "multi_worker"], "{not json", "TF_CONFIG is not JSON", ""),
    (["--strategy", "multi_worker"], "[]", "TF_CONFIG must be a JSON object, not a list", ""),
    (["--strategy", "multi_worker"], {"task": {"type": "worker", "index": 0}}, 'has no "cluster" object', ""),
    (["--strategy", "multi_worker"], {"cluster": {**WORKERS, "ps": ["h:1"]}, "task": {"type": "worker", "index": 0}},
     "names the job(s) ps", ""),
    (["--strategy", "multi_worker"], {"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}},
     "holds 'nohost', which is not \"host:port\"", ""),
    (["--strategy", "multi_worker"], {"cluster": {"worker": ["h:70000"]}, "task": {"type": "worker", "index": 0}},
     "a port from 1 to 65535", ""),
    (["--strategy", "multi_worker"], {"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker", "index": 0}},
     "names the same host:port twice", ""),
    (["--strategy", "multi_worker"], {"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}},
     'names more than one "chief"', ""),
    (["--strategy", "multi_worker"], {"cluster": WORKERS}, 'has no "task" object', ""),
    (["--strategy", "multi_worker"], {"cluster": WORKERS, "task": {"type": "evaluator", "index": 0}},
     "\"type\" is 'evaluator', which is not a job of the cluster (worker)", ""),
    (["--strategy", "multi_worker"], {"cluster": WORKERS, "task": {"type": "worker", "index": 2}},
     '"index" is 2, but the "worker" job has tasks 0 to 1', ""),
    (["--strategy", "multi_worker"], {"cluster": WORKERS, "task": {"type": "worker", "index": True}},
     '"index" is True', ""),
    ([], {"cluster": WORKERS, "task": {"type": "worker", "index": "0"}}, "\"index\" is '0'", ""),  # auto reads it
]


def exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exited:  # argparse's own refusals (an unknown choice) exit from inside
        return exited.code


@pytest.mark.parametrize("flags, tf_config, message, hint", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_strategy_flags_and_tf_config_exit_2_with_one_line(flags, tf_config, message, hint, tmp_path,
                                                                monkeypatch, capsys):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config if isinstance(tf_config, str) else json.dumps(tf_config))
    code = exit_status(["train", *flags, "--log-dir", str(tmp_path / "logs")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and message in error and hint in error, error
    if error.startswith("lstm-mnist train: error: TF_CONFIG"):
        assert "e.g. TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:2222\", \"host2:2222\"]}" in error
    assert "Traceback" not in error and not (tmp_path / "logs").exists()


def test_which_worker_this_is_and_who_the_chief_is(monkeypatch):
    def worker(strategy, spec):
        monkeypatch.setenv("TF_CONFIG", json.dumps(spec) if spec is not None else "")
        return distribution.this_worker(Config(strategy=strategy))

    task = {"type": "worker", "index": 1}
    assert worker("multi_worker", {"cluster": WORKERS, "task": task}) == (1, 2, False)
    assert worker("auto", {"cluster": WORKERS, "task": {"type": "worker", "index": 0}}) == (0, 2, True)
    # A chief job comes first: it is the chief, and worker 0 is the second task.
    chief_and_workers = {"chief": ["c:1"], **WORKERS}
    assert worker("multi_worker", {"cluster": chief_and_workers, "task": {"type": "chief", "index": 0}}) == (0, 3, True)
    assert worker("multi_worker", {"cluster": chief_and_workers, "task": {"type": "worker", "index": 0}}) == \
        (1, 3, False)
    # auto with a cluster of one, or no TF_CONFIG: alone. default and mirrored never read TF_CONFIG.
    assert worker("auto", {"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 0}}) == (0, 1, True)
    assert worker("auto", None) == distribution.ALONE
    assert worker("default", "{not json") == distribution.ALONE
    assert worker("mirrored", {"cluster": WORKERS, "task": task}) == distribution.ALONE


def test_devices_this_machine_lacks_or_cannot_split_any_more_are_refused_with_one_line(tmp_path, cache_dir,
                                                                                         monkeypatch):
    tf.config.list_logical_devices()  # TensorFlow sets up its devices here, if no test did before
    config = Config(strategy="mirrored", devices="CPU:0,CPU:1", log_dir=str(tmp_path / "logs"))
    with pytest.raises(OneLineError, match=r"^--devices CPU:0,CPU:1: TensorFlow has already set up this process's "
                                           r"devices, so the CPU can no longer be split into 2; run it in a new process"):
        train_here(config, cache_dir, monkeypatch)
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(OneLineError, match=r"^--devices GPU:0,GPU:1: TensorFlow finds no GPU on this machine, "
                                               r"not GPU:0, GPU:1; name GPUs it finds") as refused:
            train_here(dataclasses.replace(config, devices="GPU:0,GPU:1"), cache_dir, monkeypatch)
        assert refused.value.exit_code == 2
    assert not (tmp_path / "logs").exists()


def test_old_run_folders_without_the_hardware_settings_still_resume(tmp_path):
    """config.json written before --strategy existed lacks it (and --devices): they take their defaults."""
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    saved = {key: value for key, value in Config().to_dict().items() if key not in ("strategy", "devices")}
    (run_dir / "config.json").write_text(json.dumps(saved))
    config, _ = load_run_config(run_dir)
    assert config == Config()
    given = {"strategy": "mirrored", "devices": "CPU:0,CPU:1"}
    assert merge_resume_flags(config, given) == dataclasses.replace(Config(), **given)
