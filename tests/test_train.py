"""One tiny epoch end to end: every file a run promises, and the TensorBoard tags inside them."""

import datetime
import json

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from lstm_mnist.config import Config
from lstm_mnist.run import RunError, create_run_dir
from lstm_mnist.train import learning_rate_schedule, train_and_evaluate


def tiny_config(log_dir, **overrides):
    settings = dict(epochs=1, train_examples=256, val_size=128, test_examples=128, batch_size=64,
                    units=16, log_every_steps=3, log_dir=str(log_dir))
    settings.update(overrides)
    return Config(**settings)


def event_tags(run_subdir):
    """Tags of one TensorBoard run, read back with TensorBoard's own event reader."""
    accumulator = EventAccumulator(str(run_subdir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return set(accumulator.Tags()["tensors"]), accumulator


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, train_offline):
    config = tiny_config(tmp_path_factory.mktemp("logs"))
    return config, train_offline(config)


def test_run_writes_every_promised_file(tiny_run):
    config, result = tiny_run
    run_dir = result.run_dir
    assert run_dir.name.endswith("-lstm16")
    assert (run_dir / "checkpoints" / "checkpoint").is_file()
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved.pop("data_fingerprint").startswith("sha256:")  # what --resume checks the data against
    assert saved == config.to_dict()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_examples"] == 128 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["steps"] == 4  # 256 images / batch 64
    assert metrics == result.metrics


def test_saved_model_reloads_and_predicts_the_same(tiny_run):
    _, result = tiny_run
    reloaded = keras.models.load_model(result.run_dir / "model.keras")
    x = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(reloaded(x), result.model(x), rtol=1e-6, atol=1e-6)


def test_event_files_hold_scalars_and_one_histogram_per_weight(tiny_run):
    config, result = tiny_run
    train_tags, train_events = event_tags(result.run_dir / "train")
    validation_tags, _ = event_tags(result.run_dir / "validation")
    test_tags, test_events = event_tags(result.run_dir / "test")

    assert {"epoch/loss", "epoch/accuracy", "step/loss", "step/accuracy",
            "optimizer/learning_rate", "optimizer/gradient_norm"} <= train_tags
    assert {"epoch/loss", "epoch/accuracy"} <= validation_tags  # same tags: the curves overlay
    assert {"final/loss", "final/accuracy"} <= test_tags
    final_accuracy = float(make_ndarray(test_events.Tensors("final/accuracy")[-1].tensor_proto))
    assert final_accuracy == pytest.approx(result.metrics["test_accuracy"])

    # One histogram per weight, each under its own tag (no collisions between layers).
    histogram_tags = {tag for tag in train_tags if tag.startswith("weights/")}
    expected = {f"weights/{variable.path}" for variable in result.model.weights}
    assert histogram_tags == expected
    assert len(expected) == len(result.model.weights) == 5
    assert "weights/lstm_1/lstm_cell/recurrent_kernel" in histogram_tags
    # Step-level scalars are written every log_every_steps (3 here) steps, and at each epoch's last step
    # (4 here), so that a run shorter than log_every_steps still has them.
    for tag in ("step/loss", "optimizer/learning_rate", "optimizer/gradient_norm", "throughput/examples_per_second"):
        assert [event.step for event in train_events.Tensors(tag)] == [3, 4], tag
    # The rate each step applied: step s is the optimizer's iteration s - 1 (warmup 2 steps, then the cosine to 0).
    schedule = learning_rate_schedule(config, steps_per_epoch=4)
    logged = [float(make_ndarray(event.tensor_proto)) for event in train_events.Tensors("optimizer/learning_rate")]
    assert logged == pytest.approx([float(schedule(2)), float(schedule(3))]) and logged[-1] > 0


def test_two_runs_never_share_a_folder(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-home"))
    config = tiny_config(tmp_path, train_examples=64, test_examples=64, val_size=64)
    first = train_and_evaluate(config, log=lambda line: None, cache_dir=cache_dir)
    second = train_and_evaluate(config, log=lambda line: None, cache_dir=cache_dir)
    assert first.run_dir != second.run_dir
    assert (first.run_dir / "metrics.json").exists() and (second.run_dir / "metrics.json").exists()


def test_create_run_dir_in_the_same_second_gets_a_new_suffix(tmp_path):
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    folders = [create_run_dir(str(tmp_path), "", "lstm128", now=now) for _ in range(3)]
    assert [f.name for f in folders] == ["20260102-030405-lstm128", "20260102-030405-lstm128-2",
                                         "20260102-030405-lstm128-3"]


def test_an_existing_run_name_is_refused_and_left_alone(tmp_path):
    unfinished = create_run_dir(str(tmp_path), "baseline", "lstm128")
    (unfinished / "config.json").write_text("{}")
    # --resume is suggested only where it would work (test_commands.py has the run that can be resumed).
    with pytest.raises(RunError, match=r"baseline already exists; choose another --name \(that run cannot be "
                                       r"resumed: config.json is not a valid lstm_mnist config"):
        create_run_dir(str(tmp_path), "baseline", "lstm128")
    # A finished run cannot be resumed, so --resume is not suggested.
    (unfinished / "metrics.json").write_text("{}")
    with pytest.raises(RunError, match="baseline already exists; that run has finished; choose another --name$"):
        create_run_dir(str(tmp_path), "baseline", "lstm128")
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(RunError, match="not-a-run already exists; choose another --name$"):
        create_run_dir(str(tmp_path), "not-a-run", "lstm128")
    assert sorted(p.name for p in unfinished.iterdir()) == ["config.json", "metrics.json"]
    assert (unfinished / "metrics.json").read_text() == "{}"


def test_unwritable_log_dir_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(RunError, match="cannot write a run folder there"):
        create_run_dir(str(blocker / "logs"), "", "lstm128")
    assert blocker.read_text() == "not a folder"


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = Config(epochs=4, learning_rate=3e-3, warmup_epochs=0.5)
    schedule = learning_rate_schedule(config, steps_per_epoch=100)
    assert float(schedule(0)) == 0.0
    assert float(schedule(25)) == pytest.approx(1.5e-3)  # halfway through the warmup
    assert float(schedule(50)) == pytest.approx(3e-3)  # the peak
    assert float(schedule(225)) == pytest.approx(1.5e-3, rel=1e-3)  # halfway down the cosine
    assert float(schedule(400)) == pytest.approx(0.0, abs=1e-9)
    assert learning_rate_schedule(Config(lr_schedule="constant", learning_rate=1e-3), 100) == 1e-3


def test_the_checkpoint_index_is_in_tensorflows_own_format(tiny_run):
    """run.py writes the index itself (to sync it); TensorFlow's own reader must still understand it."""
    import tensorflow as tf

    folder = tiny_run[1].run_dir / "checkpoints"
    assert tf.train.latest_checkpoint(str(folder)) == str(folder / "ckpt-4")
    assert list(tf.train.get_checkpoint_state(str(folder)).all_model_checkpoint_paths) == [str(folder / "ckpt-4")]


def test_val_size_0_reports_no_validation_numbers(tmp_path, cache_dir, monkeypatch):
    """No validation set: no val_ numbers in the epoch line, null in metrics.json, nothing in TensorBoard."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-home"))
    lines = []
    result = train_and_evaluate(tiny_config(tmp_path, val_size=0, train_examples=128, test_examples=64),
                                log=lines.append, cache_dir=cache_dir)
    (epoch_line,) = [line for line in lines if line.startswith("epoch 1/1")]
    assert "train_loss" in epoch_line and "val_" not in epoch_line
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["val_loss"] is None and saved["val_accuracy"] is None and saved["train_loss"] > 0
    train_tags, _ = event_tags(result.run_dir / "train")
    assert "epoch/loss" in train_tags
    assert not (result.run_dir / "validation").exists()  # no validation run in TensorBoard at all
