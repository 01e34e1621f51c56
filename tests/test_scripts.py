"""Every script in scripts/ runs, in a tiny mode, so none can rot unseen (as pytorch/examples' --dry-run).

Each script is started as a user starts it, `python scripts/<name>.py ...`, in a
subprocess with private caches; the slow ones are given tiny sizes. A script
with a test elsewhere is listed in ELSEWHERE, and a test below checks that
every file in scripts/ is covered by one or the other.
"""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
TESTS = Path(__file__).resolve().parent

# Scripts whose tiny-mode test lives in another test module (the module must name the script).
ELSEWHERE = {
    "benchmark_histograms.py": "test_dashboard.py",
    "gates_by_row.py": "test_gates_by_row.py",
}
# Scripts run by the tests in this module.
HERE = ("train.py", "gradient_flow.py", "why_lstm.py", "benchmark_logging.py", "benchmark.py", "screenshots.py")


def run_script(name, *args, env, cwd, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_every_script_is_run_by_a_test():
    scripts = {path.name for path in SCRIPTS.glob("*.py")}
    assert scripts == set(HERE) | set(ELSEWHERE), "a script without a test (or a test of a script that is gone)"
    for script, module in ELSEWHERE.items():
        assert f"scripts/{script}" in (TESTS / module).read_text() or f'"{script}"' in (TESTS / module).read_text()


def test_train_script(tmp_path, cli_env, imported_by):
    """The command from a checkout; with --no-tensorboard, TensorBoard's machinery is not even imported, nor
    matplotlib, which Keras would import for its image galleries (quiet.py)."""
    cli_env["PYTHONPROFILEIMPORTTIME"] = "1"  # Python lists every module it imports on stderr
    result = run_script("train.py", "--epochs", 1, "--train-examples", 128, "--val-size", 64, "--test-examples", 64,
                        "--units", 8, "--batch-size", 64, "--log-dir", tmp_path / "logs", "--name", "smoke",
                        "--no-tensorboard", env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    assert (tmp_path / "logs" / "smoke" / "metrics.json").is_file()
    imported = imported_by(result.stderr)
    assert "lstm_mnist.train" in imported and "lstm_mnist.dashboard" not in imported
    assert imported.get("matplotlib", 0) < 1000 and "matplotlib.colors" not in imported  # only tried, in microseconds


def test_gradient_flow_and_why_lstm_scripts(tmp_path, cli_env):
    """gradient_flow.py at T = 14, then why_lstm.py at T = 7 and 14 in the same folder, two cells, one tiny epoch.

    gradient_flow.py trains the T = 14 runs and draws only its figure; why_lstm.py reads those runs back
    (it does not train them again), trains the T = 7 ones, and writes every run, figure, table and curve.
    """
    log_dir, images = tmp_path / "why-logs", tmp_path / "images"
    tiny = ("--cells", "simple_rnn", "lstm", "--epochs", 1, "--units", 8, "--train-examples", 256, "--val-size", 64,
            "--test-examples", 64, "--flow-images", 16, "--log-dir", log_dir, "--output-dir", images)
    result = run_script("gradient_flow.py", "--length", 14, *tiny, env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in images.iterdir()) == ["gradient_flow.png"]
    assert sorted(path.name for path in log_dir.iterdir()) == ["T014-lstm", "T014-simple_rnn", "gradient_flow"]
    assert "[T014-lstm] lstm-mnist train " in result.stdout and "LSTM, forget bias 1: ||dL/dx_0||" in result.stdout

    result = run_script("why_lstm.py", "--lengths", 7, 14, "--flow-length", 14, *tiny, env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[T014-lstm] finished earlier: read back" in result.stdout  # trained once, by gradient_flow.py
    assert "[T014-lstm] lstm-mnist train " not in result.stdout
    for picture in ("why_lstm.png", "gradient_flow.png"):
        assert (images / picture).stat().st_size > 10_000  # real PNGs with several panels, not empty files
    assert sorted(path.name for path in log_dir.iterdir()) == ["T007-lstm", "T007-simple_rnn", "T014-lstm",
                                                              "T014-simple_rnn", "gradient_flow", "results.json",
                                                              "results.md", "summary"]
    assert all((log_dir / run / "metrics.json").is_file() for run in ("T007-lstm", "T014-simple_rnn"))
    assert sorted(path.name for path in (log_dir / "gradient_flow").iterdir()) == [
        "lstm_fresh", "lstm_trained", "simple_rnn_fresh", "simple_rnn_trained"]
    assert (log_dir / "results.md").read_text().count("| 14 | 56 |") == 2  # one table row per cell
    assert "[T007-lstm] lstm-mnist train " in result.stdout and "--pixels-per-step 112" in result.stdout
    assert "LSTM, forget bias 1: ||dL/dx_0|| / ||dL/dx_13||" in result.stdout and "mean forget gate" in result.stdout


@pytest.mark.parametrize("script, flags, message", [
    ("gradient_flow.py", ["--length", 0], "--length must divide 784"),
    ("why_lstm.py", ["--lengths", 28, -5], "--lengths must divide 784 (T = 784 / pixels per step), got -5"),
    ("gradient_flow.py", ["--train-examples", -1], "--train-examples must be 0 or more"),
    ("why_lstm.py", ["--val-size", 0], "--val-size must be positive"),
    ("gradient_flow.py", ["--output-dir", "a-file"], "a-file is a file, not a folder; pass a folder"),
    ("gradient_flow.py", ["--data", "nowhere.npz"], "--data nowhere.npz: no such file or folder"),
])
def test_why_lstm_and_gradient_flow_refuse_bad_flags_in_one_line(tmp_path, cli_env, script, flags, message):
    """Exit 2, a last line on stderr that names the flag, no traceback, and no run folder or picture left."""
    (tmp_path / "a-file").write_text("mine")
    lengths = ["--length", 14] if script == "gradient_flow.py" else ["--lengths", 14, "--flow-length", 14]
    result = run_script(script, *lengths, "--log-dir", tmp_path / "logs", "--output-dir", tmp_path / "images", *flags,
                        env=cli_env, cwd=tmp_path)  # the last --output-dir given wins
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[-1] and lines[-1].startswith(script), lines
    assert "go on where it stopped" not in lines[-1]  # the input is at fault: running it again would not help
    assert not (tmp_path / "logs").exists() and not (tmp_path / "images").exists()
    assert (tmp_path / "a-file").read_text() == "mine"


def test_benchmark_logging_script(tmp_path, cli_env):
    result = run_script("benchmark_logging.py", "--epochs", 1, "--repeats", 1, "--train-examples", 128,
                        "--val-size", 64, "--test-examples", 64, "--units", 8, env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch throughput, logging on / off:" in result.stdout
    assert result.stdout.count("repeat 1/1") == 2  # one run with logging, one without


def test_benchmark_script(tmp_path, cli_env):
    """Every part, in tiny sizes: tables, JSON and the figure come out (the numbers mean nothing at this size)."""
    report, figure = tmp_path / "benchmark.json", tmp_path / "recipe.png"
    result = run_script("benchmark.py", "--quick", "--json", report, "--figure", figure, env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for title in ("Training throughput", "What TensorBoard logging costs", "Where a step's time goes",
                  "Start-up of a one-step run", "Peak resident memory", "Accuracy of the default recipe",
                  "One CPU against two logical CPUs", "TensorFlow's threads, ours and model.fit",
                  "The arithmetic of a step, against this CPU's matrix products"):
        assert f"## {title}" in result.stdout, title
    numbers = json.loads(report.read_text())
    assert {"machine", "throughput", "logging", "steps", "startup", "memory", "accuracy", "strategies",
            "threads", "arithmetic"} <= set(numbers)
    assert numbers["machine"]["cores"] >= 1 and numbers["machine"]["tensorflow"]
    assert numbers["throughput"]["ours"]["wall_ratio_to_fit"]["median"] > 0
    assert numbers["throughput"]["ours"]["median_to_fits_fastest_round"] > 0
    assert "ours' median against model.fit's fastest round: " in result.stdout
    assert numbers["startup"]["ours, second run"]["first_step_done"] > numbers["startup"]["ours, second run"]["imported"]
    from_hooks = numbers["logging"]["whole epoch, from the hooks' own time: epoch / (epoch - hooks)"]["wall_time_ratio"]
    assert from_hooks["median"] > 1  # the hooks took some time, and less than the epoch around them (tiny epochs here)
    assert len(numbers["accuracy"]["runs"]["0"]["curve"]) == 2  # one point per epoch
    for name, entry in numbers["threads"].items():  # each setting ran, in its own process, with its threads
        assert entry["images_per_second_median"] > 0, name
        assert entry["threads_seen"] == ([[2, 1]] if "2 operations at once" in name else [[0, 0]]), name
    assert numbers["threads"]["ours, 2 operations at once, 1 thread each"]["wall_ratio_to_fit"]["median"] > 0
    arithmetic = numbers["arithmetic"]  # the products measured twice, and a row for each full-step measurement
    assert all(rates["gflops_before"] > 0 and rates["gflops_after"] > 0 for rates in arithmetic["products"].values())
    assert {"ours (throughput part, median)", "model.fit (throughput part, median)",
            "ours: + the loop over the rows unrolled (unroll_for) (steps part, median)"} <= set(arithmetic["training"])
    assert figure.stat().st_size > 10_000
    redrawn = tmp_path / "again.png"
    again = run_script("benchmark.py", "--redraw", report, "--figure", redrawn, env=cli_env, cwd=tmp_path)
    assert again.returncode == 0 and redrawn.stat().st_size > 10_000, again.stderr


@pytest.mark.parametrize("flags, message", [
    (["--repeats", "0"], "--repeats must be 1 or more"),
    (["--seeds", "0,one"], "--seeds takes whole numbers"),
    (["--only", "throughput,speed"], "unknown part(s) speed"),
    (["--json", "{tmp}/no-such-folder/b.json"], "cannot write a file there"),
    (["--figure", "{tmp}"], "cannot write a file there"),
])
def test_benchmark_refuses_bad_flags_before_running_anything(tmp_path, cli_env, flags, message):
    result = run_script("benchmark.py", *[flag.format(tmp=tmp_path) for flag in flags], env=cli_env, cwd=tmp_path,
                        timeout=60)
    assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""  # nothing measured, nothing printed
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # and nothing written


def test_the_benchmarks_epoch_marks_leave_model_fit_as_a_user_runs_it():
    """README, Speed: the benchmark's model.fit callback overrides on_train_batch_end (for the first step's time).

    In Keras 3 a callback that overrides a batch hook could switch model.fit from asynchronous to synchronous
    batch hooks, a different path from a user's plain fit. On TensorFlow both are synchronous: with the
    callback or without it, Keras reads each step's numbers back. If a Keras version changes that, the
    comparison with model.fit needs another look.
    """
    import keras
    from keras.src.callbacks.callback_list import CallbackList

    class MarksTheFirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    assert CallbackList([MarksTheFirstStep()])._async_train is CallbackList([])._async_train is False


def test_screenshots_script(tmp_path, cli_env):
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("scripts/screenshots.py drives Chromium through Playwright, which is not installed "
                    "(pip install playwright; apt-get install chromium); it is only needed to refresh the README's "
                    "pictures")
    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("scripts/screenshots.py needs a Chromium binary (apt-get install chromium), not found here")
    log_dir = tmp_path / "logs"
    trained = run_script("train.py", "--epochs", 1, "--train-examples", 128, "--val-size", 64,
                         "--test-examples", 64, "--units", 8, "--batch-size", 64, "--log-dir", log_dir,
                         env=cli_env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    # The GRAPHS view clicks nothing first: it fails if the page opens on an error ("Malformed GraphDef").
    result = run_script("screenshots.py", "--logdir", log_dir, "--out", tmp_path / "shots", "--settle-ms", 1000,
                        "--only", "scalars", "graphs_train_step", env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for view in ("scalars", "graphs_train_step"):
        assert (tmp_path / "shots" / f"tensorboard_{view}.png").stat().st_size > 10_000


@pytest.mark.parametrize("sizes", [{}, {"units": 16, "pixels_per_step": 56}])
def test_the_benchmarks_flop_count_is_the_matrix_products_of_the_traced_step(sizes):
    """The arithmetic part's count (benchmark.py's flops_per_image) against the graph: every MatMul of the
    training step's forward and backward pass, unrolled so that all T rows are in it, 2 FLOP per multiply-add."""
    import tensorflow as tf

    from lstm_mnist.config import Config
    from lstm_mnist.model import build_model
    from lstm_mnist.train import loss_and_accuracy

    spec = importlib.util.spec_from_file_location("benchmark", SCRIPTS / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    config, batch = Config(**sizes), 32
    model = build_model(config, unroll=True)

    @tf.function(input_signature=[tf.TensorSpec([batch, config.timesteps, config.features]),
                                  tf.TensorSpec([batch], tf.int32)])
    def gradients(x, y):
        with tf.GradientTape() as tape:
            loss, _ = loss_and_accuracy(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    counted = 0
    for op in gradients.get_concrete_function().graph.get_operations():
        assert op.type not in ("While", "StatelessWhile", "BatchMatMulV2"), op.type  # all of it in plain MatMuls
        if op.type == "MatMul":
            a, b = (tensor.shape for tensor in op.inputs)
            rows, inner = (a[1], a[0]) if op.get_attr("transpose_a") else (a[0], a[1])
            columns = b[0] if op.get_attr("transpose_b") else b[1]
            counted += 2 * rows * inner * columns
    assert counted == batch * benchmark.flops_per_image(config.timesteps, config.features, config.units)
