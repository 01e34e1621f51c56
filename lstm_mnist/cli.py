"""The `lstm-mnist` command: flags generated from Config, errors as one line.

    lstm-mnist train [--epochs 8] [--cell lstm] [--units 128] ...

Every field of `Config` becomes a flag of the same name (underscores become
dashes), with the field's default and help text, so `--help`, the README and
the code cannot disagree. The entry point only parses arguments and calls the
library; it never trains anything itself.

Every failure a person can fix is an errors.OneLineError: one line on stderr,
its exit status, no traceback (errors.py lists the statuses). Anything else is
a bug: one line too, naming a file that holds the full traceback to report.
Ctrl-C and SIGTERM are answered from the first moment (run.StopRequests), so
even an interrupted TensorFlow import ends in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import traceback
from pathlib import Path

from lstm_mnist.config import Config, flag
from lstm_mnist.errors import OneLineError, plain_reason
from lstm_mnist.run import (RunLock, StopRequests, TrainingStopped, load_run_config, merge_resume_flags,
                            read_index)

PROG = "lstm-mnist"


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line on stderr (and exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field: --batch-size for batch_size, and so on.

    Every flag's argparse default is SUPPRESS, so the parsed namespace holds
    only the flags the user actually typed; `config_from_args` fills in the
    rest from Config's own defaults. That is how --resume tells a flag that
    contradicts the run from one that was merely left at its default.
    """
    for field in dataclasses.fields(Config):
        help_text = f"{field.metadata['help']} (default: {field.default})"
        if isinstance(field.default, bool):
            # --deterministic / --no-deterministic
            parser.add_argument(f"--{flag(field.name)}", dest=field.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(f"--{flag(field.name)}", dest=field.name, default=argparse.SUPPRESS,
                                type=type(field.default), choices=field.metadata.get("choices"),
                                metavar=None if "choices" in field.metadata else field.name.upper(),
                                help=help_text)


def is_startup_chatter(line: str) -> bool:
    """TensorFlow's C++ start-up lines that carry no information for a user.

    They are written through Abseil before its logging is initialised, and
    such messages ignore TF_CPP_MIN_LOG_LEVEL (an Abseil bug, abseil-cpp #1718),
    so they are filtered here: INFO lines and the "no CUDA driver" error that
    every CPU-only machine prints. Everything else is shown.
    """
    return (line.startswith("WARNING: All log messages before absl::InitializeLog()")
            or line.startswith("I0000 ")
            or (line.startswith("E0000 ") and "cuInit" in line))


@contextlib.contextmanager
def native_stderr_filtered(drop):
    """Capture file descriptor 2 (C++ and Python alike) and replay the lines `drop` rejects."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if not drop(line):
                    print(line, file=sys.stderr)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe for GPUs once, without the start-up chatter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later C++ INFO/WARNING lines
    with native_stderr_filtered(is_startup_chatter):
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG,
        description="Train an LSTM to classify MNIST digits by reading each image one row at a time.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=OneLineErrorParser)
    train = commands.add_parser("train", help="train, evaluate on the test set, write TensorBoard logs",
                                description="Train, evaluate on the full test set, and write a run "
                                            "folder with TensorBoard logs under --log-dir.")
    train.add_argument("--resume", metavar="RUN_DIR", type=Path, default=None,
                       help="continue this run folder from its latest checkpoint, with its own config.json")
    add_config_flags(train)
    train.set_defaults(command_function=train_command)
    return parser


def given_settings(args: argparse.Namespace) -> dict:
    """The Config settings the user typed on the command line (and only those)."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(Config) if hasattr(args, field.name)}


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**given_settings(args))


def train_command(args: argparse.Namespace, stop: StopRequests) -> int:
    """`lstm-mnist train`: check the flags (and --resume's folder) first, then import TensorFlow and train."""
    config = config_from_args(args)
    try:
        config.validate()
    except ValueError as error:
        raise OneLineError(str(error), exit_code=2) from None
    if args.resume is not None:
        # Every refusal that needs no TensorFlow comes before the seconds spent importing it
        # (all are made again once the run holds its lock).
        saved, _ = load_run_config(args.resume)
        config = merge_resume_flags(saved, given_settings(args))
        with RunLock(args.resume):
            read_index(args.resume)

    import_tensorflow_quietly()
    import tensorflow as tf

    from lstm_mnist.train import train_and_evaluate

    try:
        train_and_evaluate(config, resume_dir=args.resume, stop_requests=stop)
    except (tf.errors.ResourceExhaustedError, MemoryError) as error:
        raise OneLineError(f"out of memory ({plain_reason(error)}); "
                           "try a smaller --batch-size, --units or --layers") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    with StopRequests() as stop:  # from the first moment: a signal is one line, never a traceback
        args = parser.parse_args(argv)
        command = f"{PROG} {args.command}"
        try:
            return args.command_function(args, stop)
        except TrainingStopped as stopped:  # on purpose, and said so: not an error
            return report(f"{command}: {stopped}", stopped.exit_code)
        except OneLineError as error:
            return report(f"{command}: error: {error}", error.exit_code)
        except KeyboardInterrupt as interrupted:  # run.Interrupted: a signal before the run folder existed
            number = getattr(interrupted, "signal_number", 2)
            return report(f"{command}: interrupted before training started; nothing was written", 128 + number)
        except Exception as error:  # a bug: still one line, and the traceback kept for a report
            return report(f"{command}: unexpected error: {type(error).__name__}: {error_line(error)} "
                          f"(this is a bug; please report it with {save_traceback()})", 1)


def report(line: str, exit_code: int) -> int:
    print(line, file=sys.stderr)
    return exit_code


def error_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else "(no message)"


def save_traceback() -> str:
    """Write the traceback being handled to a file and return where it is (or, failing that, print it)."""
    try:
        fd, path = tempfile.mkstemp(prefix="lstm-mnist-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(traceback.format_exc())
        return f"the traceback in {path}"
    except OSError:
        traceback.print_exc()
        return "the traceback printed above"


if __name__ == "__main__":
    sys.exit(main())
