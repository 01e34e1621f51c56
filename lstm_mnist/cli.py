"""The `lstm-mnist` command: flags generated from Config, errors as one line.

    lstm-mnist train [--epochs 8] [--cell lstm] [--units 128] ...

Every field of `Config` becomes a flag of the same name (underscores become
dashes), with the field's default and help text, so `--help`, the README and
the code cannot disagree. The entry point only parses arguments and calls the
library; it never trains anything itself.

Exit status: 0 on success, 2 for a bad flag or a bad --data/--log-dir path,
1 for any other failure we can explain (no MNIST anywhere), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile

from lstm_mnist.config import Config, flag


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line on stderr (and exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field: --batch-size for batch_size, and so on."""
    for field in dataclasses.fields(Config):
        help_text = field.metadata["help"]
        if isinstance(field.default, bool):
            # --bidirectional / --no-bidirectional
            parser.add_argument(f"--{flag(field.name)}", dest=field.name, default=field.default,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(f"--{flag(field.name)}", dest=field.name, default=field.default,
                                type=type(field.default), choices=field.metadata.get("choices"),
                                metavar=None if "choices" in field.metadata else field.name.upper(), help=help_text + " (default: %(default)s)")


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
    add_config_flags(train)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Config)})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(args)
    try:
        config.validate()
    except ValueError as error:
        parser.exit(2, f"lstm-mnist train: error: {error}\n")

    import_tensorflow_quietly()
    from lstm_mnist.data import DataError
    from lstm_mnist.rundir import RunDirError
    from lstm_mnist.train import train_and_evaluate

    try:
        train_and_evaluate(config)
    except DataError as error:
        # A bad --data path is a bad flag (2); no MNIST anywhere is an environment problem (1).
        parser.exit(2 if config.data else 1, f"lstm-mnist train: error: {error}\n")
    except RunDirError as error:
        parser.exit(2, f"lstm-mnist train: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, "lstm-mnist train: interrupted\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
