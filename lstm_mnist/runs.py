"""`lstm-mnist runs`: the runs in a --log-dir folder, side by side, read without touching them.

One row per run folder: its name, when it started, the settings that differ
between the runs listed (the others are the same for all, so they say
nothing), its best validation accuracy over the epochs, its test accuracy,
the epochs done, the wall time and its status:

    finished     metrics.json is there: the run ended and saved its model
    running      a process holds the run's lock (run.RunLock): it is training now
    interrupted  stopped early (Ctrl-C, a kill, a crash, a NaN loss) and can be resumed
    failed       stopped early and cannot be resumed (the note says why)
    damaged      its config.json or metrics.json cannot be read as lstm_mnist's

Everything is read, nothing is written: not even the lock file is created
(run.lock_holder). A folder that is not a run is skipped with one line, and a
damaged file makes a "damaged" row, never a traceback. The best validation
accuracy comes from the run's TensorBoard events (validation/, tag
epoch/accuracy), read here with a small reader of their record format so that
listing runs does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import stat
import struct
from pathlib import Path
from typing import NamedTuple

from lstm_mnist.config import MNIST_TRAIN_SIZE, Config, flag
from lstm_mnist.errors import OneLineError, plain_reason
from lstm_mnist.run import lock_holder, read_index, resume_command, resume_refusal
from lstm_mnist.saved import (CONFIG_FILE, METRICS_FILE, MODEL_FILE, RunFolderError, is_file, read_config,
                              read_metrics)

FINISHED, RUNNING, INTERRUPTED, FAILED, DAMAGED = "finished", "running", "interrupted", "failed", "damaged"
# Settings never shown as a column: they name the folder, or are shown in the epochs column.
NOT_COMPARED = {"name", "log_dir", "epochs"}
VALIDATION_ACCURACY_TAG = "epoch/accuracy"  # summaries.py writes it under validation/ once per epoch
EVENT_FILE_LIMIT = 1 << 30  # an event file larger than this is skipped, not read


class RunRow(NamedTuple):
    """One run as the table shows it; None where a number is not known."""

    name: str
    started: datetime.datetime | None
    config: Config | None
    best_validation: float | None
    test: float | None
    epochs_done: int | None
    seconds: float | None
    status: str
    note: str  # one line under the table: what is wrong, or how to go on; "" if nothing to say


def list_runs(log_dir: Path) -> tuple[list[RunRow], list[str]]:
    """The runs directly inside `log_dir` and one line per sub-folder skipped; only reads.

    `log_dir` may also be a single run folder. Raises RunFolderError (one
    line) if `log_dir` cannot be listed at all.
    """
    log_dir = Path(log_dir)
    if is_file(log_dir / CONFIG_FILE):
        return [read_run(log_dir)], []
    try:
        entries = sorted(os.scandir(log_dir), key=lambda entry: entry.name)
    except FileNotFoundError:
        raise RunFolderError(f"{log_dir}: no such folder; pass the --log-dir of your runs (logs by default)") \
            from None
    except NotADirectoryError:
        raise RunFolderError(f"{log_dir} is a file, not a folder of runs") from None
    except OSError as error:
        raise RunFolderError(f"{log_dir}: cannot list it ({plain_reason(error)})") from None
    rows, skipped = [], []
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith(".") or not is_folder(path):
            continue  # .gitkeep, notes, hidden folders: not runs, and not worth a line
        if is_file(path / CONFIG_FILE) or lock_holder(path) is not None:
            rows.append(read_run(path))
        else:
            skipped.append(f"skipped {path}: not a run folder (no {CONFIG_FILE})")
    return rows, skipped


def is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def read_run(run_dir: Path) -> RunRow:
    """One run folder -> its row. Every failure to read becomes a status and a note, never an exception."""
    name = run_dir.name
    holder = lock_holder(run_dir)
    try:
        started = datetime.datetime.fromtimestamp(os.stat(run_dir / CONFIG_FILE).st_mtime)
    except (OSError, ValueError, OverflowError):
        started = None
    if not is_file(run_dir / CONFIG_FILE):  # locked, config.json not yet written: a run being set up
        return RunRow(name, None, None, None, None, None, None, RUNNING,
                      f"{name}: process {holder} is setting it up")
    try:
        config, _ = read_config(run_dir)
    except RunFolderError as error:
        return RunRow(name, started, None, None, None, None, None, DAMAGED, f"{name}: {error}")
    best = best_validation_accuracy(run_dir)
    if is_file(run_dir / METRICS_FILE):
        try:
            metrics = read_metrics(run_dir)
        except RunFolderError as error:
            return RunRow(name, started, config, best, None, None, None, DAMAGED, f"{name}: {error}")
        if best is None and isinstance(metrics.get("val_accuracy"), float):
            best = metrics["val_accuracy"]  # no events (--no-tensorboard): the last epoch's is all there is
        note = "" if is_file(run_dir / MODEL_FILE) else f"{name}: its {MODEL_FILE} is missing"
        return RunRow(name, started, config, best, metrics["test_accuracy"], int(metrics["epochs"]),
                      float(metrics["seconds"]), FINISHED, note)
    done = epochs_done(run_dir, config)
    if holder is not None:
        return RunRow(name, started, config, best, None, done, None, RUNNING,
                      f"{name}: process {holder} is training it")
    refusal = resume_refusal(run_dir)
    if refusal is None:
        return RunRow(name, started, config, best, None, done, None, INTERRUPTED,
                      f"{name}: continue it with: {resume_command(run_dir)}")
    return RunRow(name, started, config, best, None, done, None, FAILED,
                  f"{name}: cannot be resumed ({refusal.split(': ', 1)[-1]})")


def epochs_done(run_dir: Path, config: Config) -> int | None:
    """Complete epochs of an unfinished run, from its newest checkpoint; None if that cannot be known.

    The step a checkpoint holds says how many epochs are done when the
    number of batches per epoch is known: for MNIST itself (no --data) it
    follows from the settings.
    """
    if config.data:
        return None  # other data: the number of training images is not recorded
    try:
        steps = read_index(run_dir)
    except OneLineError:
        return None
    train_images = MNIST_TRAIN_SIZE - config.val_size
    if config.train_examples:
        train_images = min(train_images, config.train_examples)
    steps_per_epoch = math.ceil(train_images / config.batch_size)
    return (steps[-1] if steps else 0) // steps_per_epoch


# ---------------------------------------------------------------------------
# TensorBoard's event files, read without TensorFlow
# ---------------------------------------------------------------------------


def best_validation_accuracy(run_dir: Path) -> float | None:
    """The highest epoch/accuracy in the run's validation events; None if there are none (or none can be read)."""
    values = []
    folder = run_dir / "validation"
    try:
        names = sorted(name for name in os.listdir(folder) if name.startswith("events.out.tfevents."))
    except OSError:
        return None
    for name in names:
        values += scalar_values(folder / name, VALIDATION_ACCURACY_TAG)
    finite = [value for value in values if math.isfinite(value)]
    return max(finite) if finite else None


def scalar_values(path: Path, tag: str) -> list[float]:
    """Every value of scalar `tag` in one event file, up to its end or its first damaged record.

    An event file is a sequence of TFRecords: length (uint64, little-endian),
    a 4-byte checksum of the length, the serialized Event, a 4-byte checksum
    of the data. The checksums are not verified (that would need CRC32-C);
    a record that does not parse ends the reading instead.
    """
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2

    values = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return values
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > EVENT_FILE_LIMIT:
            return values
        data = f.read()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        start, end = offset + 12, offset + 12 + length
        if end + 4 > len(data):
            break  # cut off: a run still writing it, or killed while it did
        try:
            event = event_pb2.Event.FromString(data[start:end])
        except DecodeError:
            break
        for value in event.summary.value:
            if value.tag == tag:
                number = scalar_of(value)
                if number is not None:
                    values.append(number)
        offset = end + 4
    return values


def scalar_of(value) -> float | None:
    """The number in a Summary.Value: TF2's scalar tensor, or TF1's simple_value."""
    if value.HasField("tensor"):
        tensor = value.tensor
        if tensor.float_val:
            return float(tensor.float_val[0])
        if tensor.double_val:
            return float(tensor.double_val[0])
        if len(tensor.tensor_content) in (4, 8):
            return struct.unpack("<f" if len(tensor.tensor_content) == 4 else "<d", tensor.tensor_content)[0]
        return None
    if value.HasField("simple_value"):
        return float(value.simple_value)
    return None


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

FIXED_COLUMNS = ("run", "date")
RESULT_COLUMNS = ("epochs", "best-val", "test", "time", "status")
# Sorting by a result puts the best first; by anything else, in ascending order.
BEST_FIRST = {"best-val", "test"}


def differing_settings(rows: list[RunRow]) -> list[str]:
    """The Config fields whose values differ between the rows that have a config, in Config's order."""
    configs = [row.config for row in rows if row.config is not None]
    return [field.name for field in dataclasses.fields(Config)
            if field.name not in NOT_COMPARED and len({getattr(config, field.name) for config in configs}) > 1]


def columns_of(rows: list[RunRow]) -> list[str]:
    return [*FIXED_COLUMNS, *(flag(name) for name in differing_settings(rows)), *RESULT_COLUMNS]


def cells(row: RunRow, settings: list[str]) -> dict[str, tuple[str, object]]:
    """Each column's text and the value it sorts by (None sorts last)."""
    total = row.config.epochs if row.config else None
    epochs = "-" if total is None else f"{'?' if row.epochs_done is None else row.epochs_done}/{total}"
    result = {
        "run": (row.name, row.name),
        "date": (row.started.strftime("%Y-%m-%d %H:%M") if row.started else "-", row.started),
        "epochs": (epochs, row.epochs_done),
        "best-val": (percent(row.best_validation), row.best_validation),
        "test": (percent(row.test), row.test),
        "time": (duration(row.seconds), row.seconds),
        "status": (row.status, row.status),
    }
    for name in settings:
        value = getattr(row.config, name) if row.config else None
        text = "-" if value is None else ("on" if value is True else "off" if value is False else f"{value:g}"
                                          if isinstance(value, float) else str(value) or '""')
        result[flag(name)] = (text, None if value is None else str(value) if isinstance(value, str) else value)
    return result


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def table(rows: list[RunRow], sort: str = "date") -> list[str]:
    """The lines of the table, sorted by the column `sort`; RunFolderError for a column there is not."""
    settings = differing_settings(rows)
    columns = columns_of(rows)
    if sort not in columns:
        raise RunFolderError(f"--sort {sort}: no such column; choose one of {', '.join(columns)}")
    all_cells = [cells(row, settings) for row in rows]

    def order(row_cells):
        value = row_cells[sort][1]
        if value is None:
            return (1, 0)  # unknown values last, whichever the direction
        if sort in BEST_FIRST:
            return (0, -value)
        return (0, value)

    all_cells.sort(key=lambda row_cells: (order(row_cells), row_cells["run"][1]))
    numeric = {"epochs", "best-val", "test", "time"} | {
        flag(name) for name in settings
        if any(isinstance(getattr(row.config, name, None), (int, float)) and row.config for row in rows)}
    widths = {column: max(len(column), *(len(row_cells[column][0]) for row_cells in all_cells))
              for column in columns}

    def line(texts: dict[str, str]) -> str:
        return "  ".join(texts[column].rjust(widths[column]) if column in numeric
                         else texts[column].ljust(widths[column]) for column in columns).rstrip()

    return [line({column: column for column in columns}),
            *(line({column: row_cells[column][0] for column in columns}) for row_cells in all_cells)]
