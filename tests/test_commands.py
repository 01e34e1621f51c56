"""After training: `lstm-mnist evaluate`, `predict`, `runs`, and the library's `load_run` and `preprocess`.

Every test here reads one tiny finished run (conftest.tiny_finished_run: 256 training
images, 8 units, one epoch), trained once per session; a test that changes a run works
on a copy. The commands are called in-process through `cli.main` (a subprocess would
import TensorFlow again, seconds each); the two subprocesses below check what only a
fresh interpreter can show: what `import lstm_mnist` imports, and that a --cell scratch
model loads without anything imported first.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lstm_mnist import cli
from lstm_mnist.config import Config
from lstm_mnist.errors import OneLineError
from lstm_mnist.run import RunLock, default_run_name, name_taken_advice
from lstm_mnist.saved import ImageError, RunFolderError, load_run, preprocess

ROOT = Path(__file__).resolve().parent.parent


def run_main(capsys, *argv):
    """`lstm-mnist ARGV` in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(result, expected_status, message):
    """result: run_main's (status, out, err), which must be one line on stderr holding `message`."""
    status, _, err = result
    assert status == expected_status, err
    assert err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err and "this is a bug" not in err


def copy_run(run_dir: Path, where: Path) -> Path:
    copy = where / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------


def test_evaluate_reproduces_the_recorded_accuracy_exactly(tiny_finished_run, offline_mnist_env, capsys, tmp_path):
    from lstm_mnist.evaluate import evaluate_run

    metrics = json.loads((tiny_finished_run / "metrics.json").read_text())
    for which, prefix in (("test", "test"), ("validation", "val")):
        evaluation = evaluate_run(tiny_finished_run, which, log=lambda line: None)
        # The same data, batches, compiled step and running means as training: equal to the last bit.
        assert evaluation.accuracy == metrics[f"{prefix}_accuracy"], which
        assert evaluation.loss == metrics[f"{prefix}_loss"], which
        assert len(evaluation.labels) == (100 if which == "test" else 64)
    picture = tmp_path / "mistakes.png"
    status, out, err = run_main(capsys, "evaluate", tiny_finished_run, "--misclassified", picture)
    assert status == 0, err
    assert f"test accuracy {metrics['test_accuracy']:.2%}" in out and "(the same)" in out
    assert "digit  precision  recall  images" in out and "most confused: " in out
    assert len([line for line in out.splitlines() if line[:5].strip().isdigit()]) == 20  # two 10-row tables
    assert Image.open(picture).size[0] > 100


# ---------------------------------------------------------------------------
# predict: pictures converted the way MNIST was made
# ---------------------------------------------------------------------------


def write_variants(image: np.ndarray, folder: Path, index: int) -> dict[str, Path]:
    """One MNIST digit (uint8 [28, 28], white on black) saved four ways a user's picture might come."""
    paths = {kind: folder / f"{index}-{kind}.png" for kind in ("plain", "inverted", "large", "rgb")}
    Image.fromarray(image).save(paths["plain"])
    Image.fromarray(255 - image).save(paths["inverted"])  # dark ink on light paper
    Image.fromarray(255 - image).resize((84, 84), Image.Resampling.NEAREST).save(paths["large"])  # not 28x28
    ink = image[..., np.newaxis].astype(np.float32) / 255  # (28, 28, 1)
    paper, pen = np.array([250, 240, 215]), np.array([20, 40, 140])  # blue pen on cream paper
    Image.fromarray((paper * (1 - ink) + pen * ink).round().astype(np.uint8), "RGB").save(paths["rgb"])
    return paths


def test_predict_on_pictures_matches_the_arrays(tiny_finished_run, offline_mnist_env, mnist, capsys, tmp_path):
    from lstm_mnist.predict import read_digits

    images = mnist.x_test[:6]  # uint8 (6, 28, 28)
    np.save(tmp_path / "digits.npy", images)
    pictures = [write_variants(image, tmp_path, index) for index, image in enumerate(images)]
    for image, paths in zip(images, pictures):
        for kind in ("plain", "inverted", "rgb"):
            (digit,) = read_digits([paths[kind]])
            # The conversion gives an MNIST digit back as it was (RGB rounding: a step or two of 255).
            assert np.abs(digit.image - image / 255).max() <= 2.5 / 255, kind
        (large,) = read_digits([paths["large"]])
        difference = np.abs(large.image - image / 255)  # scaled up 3x, then down into 20x20: close, not equal
        assert difference.mean() < 0.015 and difference.max() < 0.25

    status, out, err = run_main(capsys, "predict", tiny_finished_run, tmp_path / "digits.npy",
                                *(path for paths in pictures for path in paths.values()),
                                "--test-index", *range(6))
    assert status == 0, err
    says = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:] if not line.startswith("test")}
    from_arrays = [says[f"{tmp_path / 'digits.npy'}[{index}]"] for index in range(6)]
    from_test_index = [int(line.split()[5]) for line in out.splitlines() if line.startswith("test image")]
    assert from_test_index == from_arrays
    for index, paths in enumerate(pictures):
        for kind, path in paths.items():
            assert says[str(path)] == from_arrays[index], (kind, index)


def test_predict_explains_row_by_row_and_refuses_a_bidirectional_model(tiny_finished_run, capsys, tmp_path):
    picture = tmp_path / "seven.png"
    Image.new("L", (60, 90), 255).save(picture)
    blank = run_main(capsys, "predict", tiny_finished_run, picture)
    assert_one_line_error(blank, 2, "it is blank")

    canvas = Image.new("RGB", (300, 420), (250, 245, 230))
    from PIL import ImageDraw

    ImageDraw.Draw(canvas).line([(60, 80), (240, 80), (130, 360)], fill=(20, 30, 90), width=40)
    canvas.save(picture)
    explained = tmp_path / "explained.png"
    status, out, err = run_main(capsys, "predict", tiny_finished_run, picture, "--explain", explained)
    assert status == 0, err
    assert Image.open(explained).size[1] > 200 and f"wrote the row-by-row reading to {explained}" in out
    assert_one_line_error(run_main(capsys, "predict", tiny_finished_run, picture, "--explain", picture), 2,
                          "is one of the images to predict")
    assert_one_line_error(run_main(capsys, "predict", tiny_finished_run, picture, "--explain",
                                    tmp_path / "explained.jpg"), 2, "give a name ending in .png")

    bidirectional = copy_run(tiny_finished_run, tmp_path / "bi")
    config = json.loads((bidirectional / "config.json").read_text())
    (bidirectional / "config.json").write_text(json.dumps({**config, "bidirectional": True}))
    assert_one_line_error(run_main(capsys, "predict", bidirectional, picture, "--explain", explained), 2,
                          "a bidirectional model cannot be read row by row")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG file that claims width x height pixels and holds none: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_bad_images_and_bad_run_folders_are_one_line(tiny_finished_run, capsys, tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "huge.png").write_bytes(png_header_only(8_000, 9_000))  # under Pillow's own limits, over ours
    (tmp_path / "bomb.png").write_bytes(png_header_only(30_000, 30_000))  # over Pillow's own limit
    Image.effect_noise((64, 64), 50).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:120])  # cut off in its pixels
    os.symlink(tmp_path / "loop-b.png", tmp_path / "loop-a.png")
    os.symlink(tmp_path / "loop-a.png", tmp_path / "loop-b.png")
    (tmp_path / "a-folder.png").mkdir()
    not_numbers = np.zeros((40, 40), np.float32)
    not_numbers[5:35, 15:25], not_numbers[0, 0] = 1.0, np.nan  # a digit, and one NaN pixel
    Image.fromarray(not_numbers).save(tmp_path / "nan.tif")  # a floating-point TIFF (Pillow's mode "F")
    np.save(tmp_path / "flat.npy", np.zeros((3, 784), np.uint8))
    np.save(tmp_path / "bytes-as-floats.npy", np.full((2, 28, 28), 255.0, np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    images = [
        ("notes.png", "not an image Pillow can read"),
        ("empty.png", "is empty (0 bytes)"),
        ("huge.png", "is 8,000x9,000 pixels, far more than a digit needs"),
        ("bomb.png", "far more pixels than a digit needs"),
        ("cut.png", "a damaged image"),
        ("loop-a.png", "Too many levels of symbolic links"),
        ("a-folder.png", "is a folder"),
        ("nan.tif", "some pixels are not numbers (NaN or infinite)"),
        ("missing.png", "no such file"),
        ("flat.npy", "images.reshape(-1, 28, 28)"),
        ("bytes-as-floats.npy", "divide by 255, or pass them as uint8"),
        ("objects.npy", "cannot read it as a .npy array"),
    ]
    for name, message in images:
        assert_one_line_error(run_main(capsys, "predict", tiny_finished_run, tmp_path / name), 2, message)

    unfinished = copy_run(tiny_finished_run, tmp_path / "unfinished")
    (unfinished / "metrics.json").unlink()
    damaged = copy_run(tiny_finished_run, tmp_path / "damaged")
    (damaged / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    overwritten = copy_run(tiny_finished_run, tmp_path / "overwritten")
    model_bytes = bytearray((overwritten / "model.keras").read_bytes())
    model_bytes[len(model_bytes) // 2:len(model_bytes) // 2 + 64] = b"\xff" * 64  # inside the weights
    (overwritten / "model.keras").write_bytes(bytes(model_bytes))
    newer = copy_run(tiny_finished_run, tmp_path / "newer")
    config = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**config, "setting_from_the_future": 1}))
    folders = [
        (tmp_path / "missing-run", 2, "no such folder"),
        (tmp_path / "notes.png", 2, "is a file, not a run folder"),
        (tmp_path / "a-folder.png", 2, "is not a run folder"),
        (tiny_finished_run.parent, 2, "is a folder of runs, not a run"),
        (unfinished, 2, f"did not finish (it has no metrics.json), so it has no final model; finish it with: "
                        f"lstm-mnist train --resume {unfinished}"),
        (damaged, 2, "model.keras is not a Keras model file (a .keras file is a zip archive, and this one is not"),
        (overwritten, 2, "model.keras cannot be loaded (Bad CRC-32"),
        (newer, 2, "does not know: setting_from_the_future; the run was made by an incompatible version"),
    ]
    for folder, status, message in folders:
        assert_one_line_error(run_main(capsys, "evaluate", folder), status, message)
    assert_one_line_error(run_main(capsys, "evaluate", tiny_finished_run, "--data", tmp_path / "missing.npz"), 2,
                          f"--data {tmp_path / 'missing.npz'}: no such file or folder")
    with RunLock(unfinished):
        assert_one_line_error(run_main(capsys, "predict", unfinished, "--test-index", 0), 2,
                              f"is still training (process {os.getpid()}")
    assert_one_line_error(run_main(capsys, "predict", tiny_finished_run, "--test-index", 10_000), 2,
                          "there are 10,000 test images, numbered 0 to 9,999")
    assert_one_line_error(run_main(capsys, "predict", tiny_finished_run), 2, "nothing to predict")


# ---------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------


def snapshot(folder: Path) -> dict:
    return {path: (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


def test_runs_lists_every_status_and_writes_nothing(tiny_finished_run, capsys, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    finished = copy_run(tiny_finished_run, logs)
    wider = finished.with_name("wider")
    shutil.copytree(finished, wider)
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "units": 16}))
    interrupted = finished.with_name("interrupted")
    shutil.copytree(finished, interrupted)
    (interrupted / "metrics.json").unlink()
    running = finished.with_name("running")
    shutil.copytree(interrupted, running)
    failed = finished.with_name("failed")
    shutil.copytree(interrupted, failed)
    shutil.rmtree(failed / "checkpoints")
    (logs / "damaged").mkdir()
    (logs / "damaged" / "config.json").write_text("{not json")
    (logs / "holiday-photos").mkdir()
    for run in (finished, wider, interrupted, failed):
        (run / ".lock").unlink(missing_ok=True)  # as if copied from elsewhere: so we see if `runs` makes one

    with RunLock(running):
        before = snapshot(logs)
        status, out, err = run_main(capsys, "runs", logs, "--sort", "run")
        assert snapshot(logs) == before  # nothing written, not even a lock file
    assert status == 0, err
    assert err == f"skipped {logs / 'holiday-photos'}: not a run folder (no config.json)\n"
    table, _, notes = out.partition("\n\n")
    header, *rows = table.splitlines()
    assert header.split() == ["run", "date", "units", "epochs", "best-val", "test", "time", "status"]
    statuses = {row.split()[0]: row.split()[-1] for row in rows}
    assert statuses == {"tiny": "finished", "wider": "finished", "interrupted": "interrupted", "running": "running",
                        "failed": "failed", "damaged": "damaged"}
    assert [row.split()[0] for row in rows] == sorted(statuses)
    assert f"interrupted: continue it with: lstm-mnist train --resume {interrupted}" in notes
    assert "failed: cannot be resumed (it has no checkpoints/ folder" in notes
    assert f"running: process {os.getpid()} is training it" in notes
    recorded = json.loads((finished / "metrics.json").read_text())["test_accuracy"]
    assert f"{recorded:.2%}" in next(row for row in rows if row.startswith("tiny "))
    assert not (finished / ".lock").exists()

    status, out, err = run_main(capsys, "runs", logs, "--sort", "test")
    assert [row.split()[0] for row in out.split("\n\n")[0].splitlines()[1:3]] in (["tiny", "wider"], ["wider", "tiny"])
    assert_one_line_error(run_main(capsys, "runs", logs, "--sort", "colour"), 2, "--sort colour: no such column")
    assert_one_line_error(run_main(capsys, "runs", tmp_path / "nowhere"), 2, "no such folder")


# ---------------------------------------------------------------------------
# The library: load_run and preprocess
# ---------------------------------------------------------------------------


def test_preprocess_accepts_bytes_and_floats_and_refuses_the_rest(mnist):
    digits = mnist.x_test[:5]  # uint8 (5, 28, 28): the bytes that came out as 3 2 1 5 6 unscaled
    as_floats = preprocess(digits)
    assert as_floats.dtype == np.float32 and as_floats.shape == (5, 28, 28)
    np.testing.assert_array_equal(as_floats, digits / np.float32(255))
    np.testing.assert_array_equal(preprocess(as_floats), as_floats)
    assert preprocess(digits[0]).shape == (1, 28, 28)
    assert preprocess(digits.astype(np.int64)).dtype == np.float32
    refused = [
        (digits.astype(np.float32), "float images must be in [0, 1]"),
        (digits.reshape(5, 784), "images.reshape(-1, 28, 28)"),
        (digits[..., np.newaxis], "drop the channel axis"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.full((28, 28), -1), "pixel values 0..255"),
        (np.zeros((0, 28, 28)), "no images"),
        (np.array([["a"] * 28] * 28), "integers 0..255 or floats in [0, 1]"),
        (np.zeros((28, 28), bool), "integers 0..255 or floats in [0, 1]"),
    ]
    for images, message in refused:
        with pytest.raises(ImageError, match=re.escape(message)):
            preprocess(images)
    assert issubclass(ImageError, ValueError) and issubclass(ImageError, OneLineError)


def test_preprocess_with_a_runs_config_cuts_the_images_as_that_run_reads_them(mnist):
    """Bytes and floats alike become [N, T, F] in the run's order: what split_mnist gave that run."""
    from lstm_mnist.data import images_to_sequences, pixel_order

    digits = mnist.x_test[:4]  # uint8 (4, 28, 28)
    config = Config(pixels_per_step=56, permute_pixels=True, permutation_seed=3)
    expected = images_to_sequences(digits, 56, pixel_order(True, 3))  # (4, 14, 56)
    for images in (digits, digits / np.float32(255)):
        np.testing.assert_array_equal(preprocess(images, config), expected)
    np.testing.assert_array_equal(preprocess(digits, Config()), preprocess(digits))  # the default reading: as is


def test_load_run_gives_the_model_and_config(tiny_finished_run, mnist):
    model, config = load_run(tiny_finished_run)
    assert config == Config(**{k: v for k, v in json.loads((tiny_finished_run / "config.json").read_text()).items()
                               if k != "data_fingerprint"})
    logits = np.asarray(model(preprocess(mnist.x_test[:3])))  # (3, 10)
    assert logits.shape == (3, 10)
    with pytest.raises(RunFolderError, match="is a folder of runs, not a run"):
        load_run(tiny_finished_run.parent)


LIBRARY_USE = """
import sys
import lstm_mnist
print("imported:", sorted(name for name in ("tensorflow", "keras", "numpy") if name in sys.modules))
model, config = lstm_mnist.load_run(sys.argv[1])
print("loaded:", config.cell, "lstm_cell imported by load_run:", "lstm_mnist.lstm_cell" in sys.modules)
print("logits:", tuple(model(lstm_mnist.preprocess(__import__("numpy").zeros((2, 28, 28), "uint8"))).shape))
print("Keras imported whole (its scikit-learn wrappers too):", "sklearn.base" in sys.modules)
"""


def test_a_scratch_model_loads_quietly_in_a_fresh_interpreter(tiny_finished_run, tmp_path):
    """`import lstm_mnist` imports nothing heavy; load_run registers the scratch cell and prints no TF chatter."""
    from lstm_mnist.model import build_model

    scratch = copy_run(tiny_finished_run, tmp_path)
    config = {**json.loads((scratch / "config.json").read_text()), "cell": "scratch"}
    (scratch / "config.json").write_text(json.dumps(config))
    (scratch / "model.keras").unlink()
    build_model(Config(cell="scratch", units=8)).save(scratch / "model.keras")
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", LIBRARY_USE, str(scratch)], capture_output=True, text=True,
                            env=environment, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["imported: []", "loaded: scratch lstm_cell imported by load_run: True",
                                          "logits: (2, 10)",
                                          "Keras imported whole (its scikit-learn wrappers too): True"]
    assert result.stderr == ""  # no "I0000 ...", no "failed call to cuInit"


# ---------------------------------------------------------------------------
# The command line: no guessed flags, helpful refusals, advice that works
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["train", "--epoch", "2"], "unknown flag --epoch; did you mean --epochs?"),
    (["train", "--learning_rate", "0.1"], "unknown flag --learning_rate; did you mean --learning-rate?"),
    (["train", "--lr", "0.01"], "unknown flag --lr; did you mean --learning-rate?"),
    (["train", "--lr=0.01"], "unknown flag --lr; did you mean --learning-rate?"),
    (["train", "--batchsize", "64"], "did you mean --batch-size?"),
    (["train", "--cell", "lstn"], "invalid choice: 'lstn'"),
    (["evalute", "logs/x"], "did you mean evaluate?"),
    (["runs", "--sor", "test"], "unknown flag --sor; did you mean --sort?"),
    (["predict", "logs/x", "--test-index", "0", "seven.png"], "put the picture files before it"),
])
def test_flags_are_never_guessed_and_near_misses_get_a_suggestion(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert "--lr-schedule" not in err


def test_help_shows_defaults_as_they_are_typed():
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    flat = " ".join(help_text.split())
    assert "(default: )" not in flat and "lr_schedule" not in flat and "=cosine" not in flat
    assert "when --lr-schedule cosine" in flat and "(default: 0.007)" in flat and "(default: off)" in flat
    name_help = flat.rsplit("--name NAME", 1)[1].split("--log-every-steps", 1)[0]
    assert name_help.count("default") + name_help.count("empty:") == 1


def test_run_folder_names_describe_the_model():
    assert default_run_name(Config()) == "lstm128"
    assert default_run_name(Config(layers=2, bidirectional=True, dropout=0.2)) == "lstm128x2-bi-do0.2"
    assert default_run_name(Config(cell="scratch", peepholes=True, recurrent_projection=64)) == \
        "scratch128-peep-proj64"
    assert default_run_name(Config(cell="gru", units=64, input_projection=128)) == "gru64-in128"
    assert default_run_name(Config(pixels_per_step=7, permute_pixels=True)) == "lstm128-px7-perm"


def test_advice_for_a_taken_name_never_leads_to_another_error(tiny_finished_run, tmp_path):
    from lstm_mnist.run import resume_refusal

    assert name_taken_advice(tiny_finished_run) == "that run has finished; choose another --name"
    unfinished = copy_run(tiny_finished_run, tmp_path)
    (unfinished / "metrics.json").unlink()
    advice = name_taken_advice(unfinished)
    assert advice.endswith(f"continue that run with --resume {unfinished}") and resume_refusal(unfinished) is None
    with RunLock(unfinished):
        assert name_taken_advice(unfinished) == f"that run is still training (process {os.getpid()}); " \
                                                "choose another --name"
    shutil.rmtree(unfinished / "checkpoints")
    advice = name_taken_advice(unfinished)
    assert "--resume" not in advice.replace("(that run cannot be resumed", "") and "cannot be resumed" in advice


def test_runs_needs_no_tensorflow(tiny_finished_run):
    code = ("import sys; from lstm_mnist.cli import main; status = main(['runs', sys.argv[1]]); "
            "assert 'tensorflow' not in sys.modules, 'runs imported TensorFlow'; sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, str(tiny_finished_run.parent)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "tiny" in result.stdout and "finished" in result.stdout
