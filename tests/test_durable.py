"""Durable writes: complete or not at all, and never through a symlink."""

import json
import os

import pytest

from lstm_mnist import durable


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    durable.write_json(target, {"b": 1, "a": 2})
    assert json.loads(target.read_text()) == {"a": 2, "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_failing_writer_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")

    def half_then_fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        durable.write_with(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_symlink_at_the_final_name_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.keras").symlink_to(outside)
    durable.write_bytes(folder / "model.keras", b"new")
    assert outside.read_text() == "precious"
    assert not (folder / "model.keras").is_symlink()
    assert (folder / "model.keras").read_bytes() == b"new"


def test_a_symlink_planted_at_the_temporary_name_is_refused_and_left_alone(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    target = tmp_path / "metrics.json"
    durable.temporary_name(target).symlink_to(outside)
    with pytest.raises(OSError):
        durable.write_json(target, {"a": 1})
    assert outside.read_text() == "precious"
    assert durable.temporary_name(target).is_symlink()  # not ours: not deleted either
    assert not target.exists()


def test_the_file_and_its_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("rename"), real_replace(a, b))[1])
    durable.write_bytes(tmp_path / "x", b"data")
    assert calls == ["fsync", "rename", "fsync"]
