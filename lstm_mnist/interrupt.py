"""Ctrl-C and `kill` become a polite request: finish the step, save, then stop.

The first SIGINT (Ctrl-C) or SIGTERM (`kill`, a job scheduler's time limit)
only sets a flag; the training loop looks at it after every step, saves a
checkpoint and stops cleanly. A second signal means "now": the process exits
at once. That cannot damage the last good checkpoint, because checkpoints
are written so that the latest complete one is always what the index names
(see checkpoint.py). SIGKILL cannot be caught at all; the same property
covers it.
"""

from __future__ import annotations

import os
import signal
import threading

SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class StopRequests:
    """A context manager that turns SIGINT and SIGTERM into `requested`/`signal_number`."""

    def __init__(self):
        self.signal_number: int | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def _handle(self, signal_number, frame):
        # Only os.write here: print() is not safe to re-enter from a signal handler.
        if self.signal_number is None:
            self.signal_number = signal_number
            os.write(2, f"\n{SIGNAL_NAMES[signal_number]}: stopping after this step and saving a checkpoint "
                        "(send it again to quit at once)\n".encode())
        else:
            os.write(2, b"\nsecond signal: quitting now; the last complete checkpoint is kept\n")
            os._exit(128 + signal_number)

    def __enter__(self):
        # Signal handlers can only be installed from the main thread; elsewhere
        # (e.g. a notebook's worker thread) the default behaviour is kept.
        if threading.current_thread() is threading.main_thread():
            for number in SIGNAL_NAMES:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False
