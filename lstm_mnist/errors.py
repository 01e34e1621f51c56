"""Errors meant for a person: one line that says what is wrong and what to do, and an exit status.

Every failure the package can explain (a bad flag, an unreadable file, a
full disk, a NaN loss, a signal) is raised as a `OneLineError` subclass; the
CLI prints its message as one line on stderr and exits with its `exit_code`,
without a traceback:

    2      bad input: a flag, a --data/--log-dir/--name/--resume path
    1      a failure during the run: no MNIST anywhere, a full disk, a NaN loss
    130    stopped by SIGINT (Ctrl-C), 143 by SIGTERM, once a checkpoint is saved
"""

from __future__ import annotations

import re


class OneLineError(Exception):
    """An error whose message is one line for a person; `exit_code` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def plain_reason(error: BaseException) -> str:
    """The human part of an OS or TensorFlow error: "No space left on device", not the op's internals.

    OSError has it in `strerror`; TensorFlow formats its errors as
    "{{function_node ...}} <temporary path>; <reason> [Op:SaveV2]".
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    message = (getattr(error, "message", None) or str(error)).strip()
    message = message.splitlines()[0] if message else ""
    message = re.sub(r"\{\{.*?\}\}", "", message)
    message = re.sub(r"\s*\[Op:\w+\]", "", message)
    return message.split(";")[-1].strip() or type(error).__name__
