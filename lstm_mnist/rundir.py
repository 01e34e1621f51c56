"""One folder per run: created fresh, never reused, never overwritten.

    <log_dir>/<YYYYmmdd-HHMMSS>-<cell><units>/    (or <log_dir>/<--name>/)
        config.json      the resolved Config of the run
        checkpoints/     the latest training state, for --resume (see checkpoint.py)
        train/           TensorBoard event files (see summaries.py)
        validation/
        test/
        model.keras      the trained model, loadable with keras.models.load_model
        metrics.json     final test loss and accuracy, and the last epoch's numbers
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path


class RunDirError(Exception):
    """The log folder cannot hold a new run. The message is one line for a person."""


def create_run_dir(log_dir: str, name: str, default_name: str, now: datetime.datetime | None = None) -> Path:
    """Create and return a new, empty run folder under `log_dir`.

    name: the user's --name, used as the folder name exactly; if that folder
        exists the run is refused, so nothing of the earlier run is touched.
    default_name: used when name is empty, after a timestamp. `mkdir`
        without exist_ok is atomic, so if two runs start in the same second,
        one gets the folder and the other the next suffix (-2, -3, ...):
        two runs never share a folder.
    """
    base = Path(log_dir).expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
        if name:
            try:
                (base / name).mkdir()
                return base / name
            except FileExistsError:
                raise RunDirError(f"--name {name}: {base / name} already exists; choose another --name, "
                                  f"or continue that run with --resume {base / name}") from None
        stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
        for attempt in range(1, 1000):
            candidate = base / (f"{stamp}-{default_name}" if attempt == 1 else f"{stamp}-{default_name}-{attempt}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    except OSError as error:
        reason = error.strerror or str(error)
        raise RunDirError(f"--log-dir {log_dir}: cannot write a run folder there ({reason}); "
                          "pass a writable folder with --log-dir") from None
    raise RunDirError(f"--log-dir {log_dir}: too many runs named {stamp}-{default_name}; pass a --name")


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file, so a reader never sees half of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
