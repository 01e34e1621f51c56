"""The `lstm-mnist` command: flags generated from Config, errors as one line.

    lstm-mnist train [--epochs 8] [--cell lstm] [--units 128] ...

Every field of `Config` becomes a flag of the same name (underscores become
dashes), with the field's default and help text, so `--help`, the README and
the code cannot disagree. The entry point only parses arguments and calls the
library; it never trains anything itself.

Exit status: 0 on success; 2 for a bad flag or a bad --data/--log-dir/--name/
--resume; 1 for other failures we can explain (no MNIST anywhere, a full
disk, a NaN loss); 130 after Ctrl-C and 143 after SIGTERM, once a checkpoint
is saved.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from lstm_mnist.config import Config, flag


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
        prog="lstm-mnist",
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
    return parser


def given_settings(args: argparse.Namespace) -> dict:
    """The Config settings the user typed on the command line (and only those)."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(Config) if hasattr(args, field.name)}


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**given_settings(args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(message: str, status: int):
        parser.exit(status, f"lstm-mnist train: error: {message}\n")

    try:
        config = config_from_args(args)
        config.validate()
    except ValueError as error:
        fail(str(error), 2)

    from lstm_mnist.rundir import RunDirError
    from lstm_mnist.resume import load_run_config, merge_resume_flags

    if args.resume is not None:
        try:
            config = merge_resume_flags(load_run_config(args.resume), given_settings(args))
        except RunDirError as error:
            fail(str(error), 2)

    import_tensorflow_quietly()
    from lstm_mnist.checkpoint import CheckpointError
    from lstm_mnist.data import DataError
    from lstm_mnist.summaries import SummaryWriteError
    from lstm_mnist.train import TrainingStopped, train_and_evaluate

    try:
        train_and_evaluate(config, resume_dir=args.resume)
    except DataError as error:
        # A bad --data path is a bad flag (2); no MNIST anywhere is an environment problem (1).
        fail(str(error), 2 if config.data else 1)
    except RunDirError as error:
        fail(str(error), 2)
    except (CheckpointError, SummaryWriteError) as error:
        fail(str(error), 1)
    except TrainingStopped as error:
        parser.exit(error.exit_code, f"lstm-mnist train: {error}\n")
    except KeyboardInterrupt:  # Ctrl-C while loading data or building the model, before training
        parser.exit(130, "lstm-mnist train: interrupted before training started\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
