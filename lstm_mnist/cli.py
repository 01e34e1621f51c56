"""The `lstm-mnist` command: train, then look at what was trained; flags generated from Config, errors as one line.

    lstm-mnist train [--epochs 8] [--cell lstm] [--units 128] ...   train a run (train.py)
    lstm-mnist evaluate RUN_DIR [--validation] [--misclassified PATH.png]
    lstm-mnist predict RUN_DIR [IMAGE ...] [--test-index N ...] [--explain PATH.png]
    lstm-mnist runs [LOG_DIR] [--sort COLUMN]

Every field of `Config` becomes a flag of `train` with the same name
(underscores become dashes), with the field's default and help text, so
`--help`, the README and the code cannot disagree. The entry point only parses
arguments and calls the library; it never trains anything itself.

Flags are never guessed: argparse's prefix matching is off (`--epoch 2` is an
error, not `--epochs 2`, and `--lr` is not `--lr-schedule`), and an unknown
flag is answered with the flags it most likely meant.

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
import difflib
import os
import re
import stat
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

from lstm_mnist import distribution, durable
from lstm_mnist.config import Config, flag
from lstm_mnist.errors import OneLineError, plain_reason
from lstm_mnist.quiet import import_tensorflow_quietly
from lstm_mnist.run import (RunLock, StopRequests, TrainingStopped, load_run_config, merge_resume_flags,
                            read_index, refuse_unusable_log_dir)

PROG = "lstm-mnist"
# Names people type for a flag that is spelled otherwise here (checked before any prefix or near match).
FLAG_ALIASES = {"lr": "learning-rate", "learningrate": "learning-rate", "rate": "learning-rate",
                "bs": "batch-size", "batch": "batch-size", "batchsize": "batch-size", "epoch": "epochs",
                "logdir": "log-dir", "hidden": "units", "hidden-units": "units", "num-layers": "layers",
                "val": "val-size", "validation-size": "val-size", "schedule": "lr-schedule"}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line on stderr (exit 2), and flags are never guessed from a prefix."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        hint = choice_suggestion(message)
        if message.startswith("argument --test-index: invalid int value"):
            hint = "; --test-index takes the numbers after it, so put the picture files before it"
        self.exit(2, f"{self.prog}: error: {message}{hint} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        # Each (sub)command refuses the flags it does not know itself, so the suggestion comes from its own flags.
        namespace, extras = super().parse_known_args(args, namespace)
        for extra in extras:
            if extra.startswith("-") and extra not in ("-", "--") and not re.fullmatch(r"-\d.*", extra):
                self.error(f"unknown flag {extra.split('=', 1)[0]}{flag_suggestion(extra, self.known_flags())}")
        return namespace, extras

    def known_flags(self) -> list[str]:
        return [option for action in self._actions for option in action.option_strings if option.startswith("--")]


def flag_suggestion(typed: str, known: list[str]) -> str:
    """"; did you mean --epochs?" for --epoch, --Epochs, -epochs, --learning_rate, --lr; "" if nothing is close."""
    bare = typed.split("=", 1)[0].lstrip("-").replace("_", "-").lower()
    by_name = {option[2:]: option for option in known}
    if bare in by_name:
        matches = [by_name[bare]]
    elif FLAG_ALIASES.get(bare) in by_name:
        matches = [by_name[FLAG_ALIASES[bare]]]
    else:
        matches = [option for name, option in by_name.items() if name.startswith(bare)][:3] \
            or [by_name[name] for name in difflib.get_close_matches(bare, list(by_name), n=3, cutoff=0.6)]
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


def choice_suggestion(message: str) -> str:
    """"; did you mean lstm?" after argparse's "invalid choice: 'lstn' (choose from ...)"."""
    match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not match:
        return ""
    choices = re.findall(r"'([^']*)'", match[2])
    close = difflib.get_close_matches(match[1], choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def as_typed(value) -> str:
    """A default as a user would type or read it: on/off for switches, 0.003 not 3e-03."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_with_flags(text: str) -> str:
    """Config's help texts name settings as fields (lr_schedule=cosine); --help shows them as flags (--lr-schedule cosine)."""
    for field in dataclasses.fields(Config):
        if "_" in field.name:
            text = re.sub(rf"\b{field.name}=(\S+)", rf"--{flag(field.name)} \1", text)
            text = re.sub(rf"\b{field.name}\b", f"--{flag(field.name)}", text)
    return text.replace("%", "%%")  # argparse formats help texts with %


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field: --batch-size for batch_size, and so on.

    Every flag's argparse default is SUPPRESS, so the parsed namespace holds
    only the flags the user actually typed; `config_from_args` fills in the
    rest from Config's own defaults. That is how --resume tells a flag that
    contradicts the run from one that was merely left at its default.
    """
    for field in dataclasses.fields(Config):
        help_text = help_with_flags(field.metadata["help"])
        if field.default != "":  # an empty default is no default to show; the help text says what empty means
            help_text += f" (default: {as_typed(field.default)})"
        if isinstance(field.default, bool):
            # --deterministic / --no-deterministic
            parser.add_argument(f"--{flag(field.name)}", dest=field.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(f"--{flag(field.name)}", dest=field.name, default=argparse.SUPPRESS,
                                type=type(field.default), choices=field.metadata.get("choices"),
                                metavar=None if "choices" in field.metadata else field.name.upper(),
                                help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG,
        description="Train an LSTM to classify MNIST digits by reading each image one row at a time, "
                    "then evaluate it, ask it about your own digits, and compare runs.",
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

    evaluate = commands.add_parser(
        "evaluate", help="a finished run's accuracy per digit, confusion matrix and mistakes",
        description="Evaluate a finished run's model on its test set (or validation set) exactly as training "
                    "did at its end: overall accuracy (equal to the run's metrics.json), precision and recall "
                    "per digit, the confusion matrix, the most confused pairs.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a finished run folder, e.g. "
                          "logs/20261123-104151-lstm128")
    evaluate.add_argument("--validation", action="store_true",
                          help="evaluate on the run's validation set instead of the test set")
    evaluate.add_argument("--misclassified", metavar="PATH.png", type=Path,
                          help="also write a grid of the misclassified digits (the first 100) to this PNG file")
    evaluate.add_argument("--data", metavar="PATH", default=None,
                          help="where MNIST is, if not where the run found it; it must be the same data")
    evaluate.set_defaults(command_function=evaluate_command)

    predict = commands.add_parser(
        "predict", help="what a finished run's model says about your digits (PNG/JPEG, .npy, or test images)",
        description="Classify images with a finished run's model and print the ten probabilities. Pictures "
                    "(PNG, JPEG, ... any size and colours) are converted the way MNIST was made: greyscale, "
                    "white digit on black (dark-on-light is detected and inverted), the digit scaled into "
                    "20x20 and centred by its centre of mass in 28x28. A .npy file holds one image [28, 28] "
                    "or several [N, 28, 28], uint8 0..255 or float 0..1.")
    predict.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a finished run folder")
    predict.add_argument("images", metavar="IMAGE", type=Path, nargs="*", help="picture files or .npy arrays")
    predict.add_argument("--test-index", metavar="N", type=int, nargs="+", default=[],
                         help="also classify MNIST test image N (0..9,999); several may follow")
    predict.add_argument("--explain", metavar="PATH.png", type=Path,
                         help="write the row-by-row picture: the probabilities after each of the 28 rows, "
                              "beside each digit as the network saw it (the first 8 images)")
    predict.add_argument("--data", metavar="PATH", default=None,
                         help="where MNIST is, for --test-index, if not where the run found it")
    predict.set_defaults(command_function=predict_command)

    runs = commands.add_parser(
        "runs", help="a table of the runs in a folder: settings that differ, accuracies, status",
        description="List the runs in LOG_DIR: name, date, the settings that differ between them, best "
                    "validation accuracy, test accuracy, epochs, wall time and status (finished, running, "
                    "interrupted, failed, damaged). Reads only; never writes into a run folder.")
    runs.add_argument("log_dir", metavar="LOG_DIR", type=Path, nargs="?", default=Path(Config.log_dir),
                      help=f"the folder of runs (default: {Config.log_dir})")
    runs.add_argument("--sort", metavar="COLUMN", default="date",
                      help="sort by this column: run, date, a setting's column, epochs, best-val or test "
                           "(best first), time, status (default: date)")
    runs.set_defaults(command_function=runs_command)
    return parser


def given_settings(args: argparse.Namespace) -> dict:
    """The Config settings the user typed on the command line (and only those)."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(Config) if hasattr(args, field.name)}


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**given_settings(args))


# ---------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------


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
    if config.data:
        from lstm_mnist.mnist_files import check_user_path  # only here: 20 ms of imports every command would pay

        check_user_path(config.data)  # a missing --data, an empty file, a folder without the IDX files
    worker = distribution.this_worker(config)  # TF_CONFIG, checked (a multi-worker run)
    if args.resume is None and worker.chief:  # only the chief makes a run folder in --log-dir
        refuse_unusable_log_dir(config.log_dir, config.name)
    if args.resume is not None:
        # Only the chief locks the run folder; the other workers read it (and the chief may hold the lock).
        with RunLock(args.resume) if worker.chief else contextlib.nullcontext():
            read_index(args.resume)

    import_tensorflow_quietly(for_the_command=True)
    import tensorflow as tf

    from lstm_mnist.train import train_and_evaluate

    try:
        train_and_evaluate(config, resume_dir=args.resume, stop_requests=stop)
    except (tf.errors.ResourceExhaustedError, MemoryError) as error:
        raise OneLineError(f"out of memory ({plain_reason(error)}); "
                           "try a smaller --batch-size, --units or --layers") from None
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError) as error:
        if worker.count == 1:
            raise
        raise OneLineError(f"worker {worker.index} of {worker.count} lost contact with the others "
                           f"(TensorFlow's {type(error).__name__}): one of them stopped or cannot be "
                           "reached. The chief's run folder holds the last checkpoint; to go on, run the same "
                           "command with --resume RUN_DIR on every worker") from None
    return 0


def evaluate_command(args: argparse.Namespace, stop: StopRequests) -> int:
    """`lstm-mnist evaluate RUN_DIR`: the report, and with --misclassified the picture of the mistakes."""
    from lstm_mnist.evaluate import TEST, VALIDATION, evaluate_run, misclassified_picture, report
    from lstm_mnist.saved import read_finished_run

    if args.misclassified is not None:
        check_output_picture("--misclassified", args.misclassified)
    read_finished_run(args.run_dir)  # a bad folder is refused before TensorFlow is imported
    if args.data:
        from lstm_mnist.mnist_files import check_user_path

        check_user_path(args.data)  # and so is a missing --data, an empty file, a folder without the IDX files
    import_tensorflow_quietly(for_the_command=True)
    evaluation = evaluate_run(args.run_dir, VALIDATION if args.validation else TEST, data=args.data,
                              log=lambda line: None)
    for line in report(evaluation):
        print(line)
    if args.misclassified is not None:
        pixels, shown = misclassified_picture(evaluation)
        if pixels is None:
            print(f"no picture written to {args.misclassified}: there are no mistakes to show")
        else:
            write_picture("--misclassified", args.misclassified, pixels)
            wrong = int(np.sum(evaluation.labels != evaluation.predictions))
            which = f"all {wrong}" if shown == wrong else f"the first {shown} of {wrong}"
            print(f"wrote {which} misclassified digits to {args.misclassified}")
    return 0


def predict_command(args: argparse.Namespace, stop: StopRequests) -> int:
    """`lstm-mnist predict RUN_DIR IMAGE...`: the digit and the ten probabilities for each image."""
    from lstm_mnist.predict import explain_figure, probabilities, read_digits
    from lstm_mnist.saved import as_read_by, load_model, read_finished_run

    record = read_finished_run(args.run_dir)
    if not args.images and not args.test_index:
        raise OneLineError("nothing to predict: give picture files or .npy arrays, or --test-index N", exit_code=2)
    if args.explain is not None:
        check_output_picture("--explain", args.explain, inputs=args.images)
        if record.config.permute_pixels:
            raise OneLineError(f"--explain: {record.run_dir} reads the pixels in a shuffled order (--permute-pixels), "
                               "and its reading cannot be drawn row by row; predict without --explain", exit_code=2)
        if record.config.bidirectional:
            raise OneLineError(f"--explain: {record.run_dir} is bidirectional, and a bidirectional model cannot "
                               "be read row by row (its backward half starts from the bottom row); "
                               "predict without --explain", exit_code=2)
    digits = read_digits(args.images)  # every file is checked before TensorFlow is imported
    if args.test_index:
        digits += test_digits(record, args.test_index, args.data)
    import_tensorflow_quietly(for_the_command=True)
    model = load_model(record.run_dir, record.config)
    images = as_read_by(record.config, np.stack([digit.image for digit in digits]))  # (N, 28, 28) -> (N, T, F)
    answers = probabilities(model, images)  # (N, 10)
    for line in prediction_table(digits, answers):
        print(line)
    if args.explain is not None:
        from lstm_mnist.reading import probabilities_after_each_line

        shown = digits[:8]
        by_row = probabilities_after_each_line(model, images[:len(shown)])  # (n, 28, 10): after each image row
        write_picture("--explain", args.explain, explain_figure(shown, by_row))
        which = "" if len(shown) == len(digits) else f" (the first {len(shown)} of {len(digits)} images)"
        print(f"wrote the row-by-row reading to {args.explain}{which}")
    return 0


def test_digits(record, indices: list[int], data: str | None) -> list:
    """MNIST test images by index, named with their true digit."""
    from lstm_mnist.data import images_to_sequences
    from lstm_mnist.mnist_files import load_mnist
    from lstm_mnist.predict import Digit

    mnist = load_mnist(record.config.data if data is None else data, log=lambda line: None)
    count = len(mnist.x_test)
    for index in indices:
        if not 0 <= index < count:
            raise OneLineError(f"--test-index {index}: there are {count:,} test images, numbered 0 to {count - 1:,}",
                               exit_code=2)
    images = images_to_sequences(mnist.x_test[indices])  # uint8 (n, 28, 28) -> float32 in [0, 1]
    return [Digit(f"test image {index} (a {int(mnist.y_test[index])})", image)
            for index, image in zip(indices, images)]


def prediction_table(digits, answers: np.ndarray) -> list[str]:
    """One line per image: its name, the digit the network says, and the ten probabilities."""
    width = max(len("image"), *(len(digit.name) for digit in digits))
    header = f"{'image'.ljust(width)}  {'says':<10}" + "".join(f"{digit:>7}" for digit in range(answers.shape[1]))
    lines = [header]
    for digit, row in zip(digits, answers):
        answer = int(np.argmax(row))
        lines.append(f"{digit.name.ljust(width)}  {answer} ({row[answer]:6.1%})"
                     + "".join(f"{value:7.3f}" for value in row))
    return lines


def runs_command(args: argparse.Namespace, stop: StopRequests) -> int:
    """`lstm-mnist runs [LOG_DIR]`: the table; the folders skipped, one line each, on stderr; the notes below."""
    from lstm_mnist.runs import list_runs, table

    rows, skipped = list_runs(args.log_dir)
    lines = table(rows, sort=args.sort) if rows else []  # a bad --sort is refused before anything is printed
    for line in skipped:
        print(line, file=sys.stderr)
    if not rows:
        print(f"no runs in {args.log_dir} yet; start one with: lstm-mnist train --log-dir {args.log_dir}")
        return 0
    for line in lines:
        print(line)
    notes = [row.note for row in rows if row.note]
    if notes:
        print()
        for note in notes:
            print(note)
    return 0


# ---------------------------------------------------------------------------
# Pictures the commands write
# ---------------------------------------------------------------------------


def check_output_picture(option: str, path: Path, inputs: list[Path] = ()) -> None:
    """Refuse, before any work, a picture path that cannot or must not be written."""
    if path.suffix.lower() != ".png":
        raise OneLineError(f"{option} {path}: the picture is a PNG file; give a name ending in .png", exit_code=2)
    if not path.parent.is_dir():
        raise OneLineError(f"{option} {path}: the folder {path.parent} does not exist", exit_code=2)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise OneLineError(f"{option} {path}: cannot use it ({plain_reason(error)})", exit_code=2) from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OneLineError(f"{option} {path}: it exists and is not a file; give another name", exit_code=2)
    for image in inputs:
        try:
            same = os.path.samefile(path, image)
        except OSError:
            same = False
        if same:
            raise OneLineError(f"{option} {path} is one of the images to predict; writing the picture there "
                               "would replace it: give another name", exit_code=2)


def write_picture(option: str, path: Path, pixels: np.ndarray) -> None:
    """Write an RGB picture as a PNG, durably: a symbolic link at `path` is replaced, never followed."""
    from lstm_mnist.predict import png_bytes

    try:
        durable.write_bytes(path, png_bytes(pixels))
    except OSError as error:
        raise OneLineError(f"{option} {path}: could not write it ({plain_reason(error)})") from None


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


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
            what = "training started" if args.command == "train" else "it finished"
            return report(f"{command}: interrupted before {what}; nothing was written", 128 + number)
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
