"""`lstm-mnist train` several times in one fresh process; each argument is one run's flags, as a JSON list.

    python tests/train_in_one_process.py '["--strategy", "mirrored", "--devices", "CPU:0,CPU:1", ...]' '[...]'

TensorFlow can split the CPU into logical devices only before it sets up its devices, so
tests/test_distribution.py trains on two logical CPUs in a process of its own, and lets several
runs share its start-up. A run whose flags begin with `--crash-after-step N` dies right after the
checkpoint of step N is on the disk, as a process killed at that moment would (nothing after it
runs; the next run goes on). Each run's exit status is printed as `exit: <status>`.
"""

import json
import sys

from lstm_mnist.cli import main
from lstm_mnist.run import Run


class Crash(BaseException):
    """Not an Exception, so that the command's handlers do not report it: it stands for a kill."""


def train(flags: list[str]) -> int:
    crash_at, save = None, Run.save
    if flags[:1] == ["--crash-after-step"]:
        crash_at, flags = int(flags[1]), flags[2:]

    def save_then_crash(run):
        save(run)
        if run.step == crash_at:
            raise Crash

    Run.save = save_then_crash
    try:
        return main(["train", *flags])
    except Crash:
        return -9
    finally:
        Run.save = save


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(f"exit: {train(json.loads(argument))}", flush=True)
