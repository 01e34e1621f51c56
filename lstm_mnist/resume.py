"""Continuing a run: read its config, check the flags agree, rewind its event files.

`lstm-mnist train --resume RUN_DIR` continues in the same folder. Three things
make that safe:

- the run's own config.json is the configuration; a flag given on the command
  line that disagrees with it is refused, because a different batch size or
  schedule would silently make a different run;
- the checkpoint (checkpoint.py) restores weights, optimizer and step;
- TensorBoard events written after that checkpoint (between the last save and
  the crash) are removed, so after the resume no step appears twice and no
  curve jumps back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from lstm_mnist.config import Config, flag
from lstm_mnist.rundir import RunDirError

# Settings that may differ on resume: they change where data is read from,
# not what is computed.
MAY_CHANGE_ON_RESUME = {"data"}


def load_run_config(run_dir: Path) -> Config:
    """The Config a run was started with, or RunDirError if `run_dir` is not a resumable run."""
    if not run_dir.is_dir():
        raise RunDirError(f"--resume {run_dir}: no such folder; pass a run folder such as logs/20260101-120000-lstm128")
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise RunDirError(f"--resume {run_dir}: not a run folder (it has no config.json)")
    if (run_dir / "metrics.json").exists():
        raise RunDirError(f"--resume {run_dir}: this run already finished (metrics.json exists); start a new run")
    try:
        saved = json.loads(config_file.read_text())
        known = {field.name for field in dataclasses.fields(Config)}
        unknown = set(saved) - known
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}")
        config = Config(**saved)
        config.validate()
    except (ValueError, TypeError) as error:
        raise RunDirError(f"--resume {run_dir}: config.json is not a valid lstm_mnist config ({error})") from None
    return config


def merge_resume_flags(saved: Config, given: dict) -> Config:
    """Apply the flags given alongside --resume, refusing any that contradict the run."""
    conflicts = [f"--{flag(name)} {value} (the run used {getattr(saved, name)})"
                 for name, value in given.items()
                 if name not in MAY_CHANGE_ON_RESUME and value != getattr(saved, name)]
    if conflicts:
        raise RunDirError(f"--resume: {'; '.join(conflicts)}; drop these flags to continue the run as it was, "
                          "or start a new run")
    return dataclasses.replace(saved, **{k: v for k, v in given.items() if k in MAY_CHANGE_ON_RESUME})


def discard_events_after(run_dir: Path, step: int) -> int:
    """Remove TensorBoard events with a step after `step` from every event file of the run.

    Returns how many events were removed. An event file cut off mid-record
    by a crash is also repaired (its incomplete last record dropped). Each
    file is rewritten through a temporary file and renamed, so a crash here
    loses nothing.
    """
    import tensorflow as tf
    from tensorboard.compat.proto import event_pb2

    removed = 0
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        kept, dropped, truncated = [], 0, False
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                raw = record.numpy()
                event = event_pb2.Event.FromString(raw)
                if event.HasField("summary") and event.step > step:
                    dropped += 1
                else:
                    kept.append(raw)
        except tf.errors.DataLossError:
            truncated = True  # the writer was killed mid-record; everything before it is good
        if dropped or truncated:
            temporary = path.with_name(path.name + ".rewrite")
            with tf.io.TFRecordWriter(str(temporary)) as writer:
                for raw in kept:
                    writer.write(raw)
            os.replace(temporary, path)
            removed += dropped
    return removed
