"""Durable writes: a file is either its old self or its complete new self, even after a power cut.

The discipline SQLite and Git use, in three calls:

    1. write the new content to a temporary file in the same folder,
       created fresh (O_EXCL) and never through a symlink (O_NOFOLLOW);
    2. flush it and fsync it, so its bytes are on the disk;
    3. rename it over the real name (atomic within one folder), then fsync
       the folder, so the rename itself is on the disk.

A reader, a crash or a second process therefore never sees half a file, and
a symlink planted at the final name is replaced (the rename swaps the
directory entry), never followed: nothing outside the folder is written.

    write_with(path, write)   write(f) fills an open binary file
    write_bytes(path, data)
    write_json(path, data)    sorted keys, two-space indent, trailing newline
    sync_folder(path)         fsync a folder after creating or renaming in it
    temporary_name(path)      the temporary name write_with uses (for tools that
                              must write a path themselves, such as Keras)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO, Callable

# A leading dot hides the temporary file from `ls`; the pid keeps two
# processes from ever sharing one (the run lock should prevent that anyway).
TEMPORARY_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """The temporary file beside `path`: `.<name>.<pid>.tmp`."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def sync_folder(folder: Path) -> None:
    """fsync a folder, so the names created, renamed or removed in it survive a power cut."""
    sync_path(folder, os.O_DIRECTORY)


def sync_file(path: Path) -> None:
    """fsync a file that another library wrote and closed (TensorFlow's checkpoint, Keras's model); never a link."""
    sync_path(path, os.O_NOFOLLOW)


def sync_path(path: Path, flags: int) -> None:
    """Open `path` read-only (with `flags`), fsync it, close it."""
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_fresh(path: Path) -> BinaryIO:
    """Create `path` for writing; refuse if anything (a file, a symlink) already has that name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")


def write_with(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` durably: `write(f)` fills a fresh temporary file, which is synced and renamed into place.

    Raises OSError (a full disk, no permission, ...) with `path` as it was: on
    failure the temporary file is removed and the old file, if any, is intact.
    """
    path = Path(path)
    temporary = temporary_name(path)
    f = open_fresh(temporary)  # raises before anything exists if the name is taken
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    write_with(path, lambda f: f.write(data))


def write_json(path: Path, data: dict) -> None:
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
