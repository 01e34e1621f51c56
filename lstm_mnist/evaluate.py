"""A finished run, measured again: accuracy, per-digit precision and recall, the confusion matrix, the mistakes.

`evaluate_run` reloads the run's model and evaluates it exactly as training
did at its end: the same data (checked by its fingerprint), the same split,
the same batches, the same compiled evaluation step (train.make_eval_step)
and the same running means (steps.Means). So the accuracy it reports is the
one in the run's metrics.json, to the last bit, and a difference would mean
that the model file or the data is not what the run used.

Per digit d, over the N images evaluated:

    precision(d) = right answers "d" / all answers "d"     how far to trust the network when it says d
    recall(d)    = right answers "d" / all images of d     how many of the d's it finds
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from lstm_mnist.config import NUM_CLASSES
from lstm_mnist.errors import OneLineError
from lstm_mnist.saved import RunFolderError, load_model, read_finished_run

TEST, VALIDATION = "test", "validation"


class Evaluation(NamedTuple):
    """One evaluation of a finished run.

    which: "test" or "validation"; loss, accuracy: the means over every image,
    computed as training computes them; recorded: the same two numbers from the
    run's metrics.json; images float32 [N, 28, 28]; labels, predictions: int [N].
    """

    run_dir: Path
    which: str
    loss: float
    accuracy: float
    recorded: dict
    images: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    data_source: str


def evaluate_run(run_dir, which: str = TEST, data: str | None = None, cache_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> Evaluation:
    """Evaluate a finished run's model on its test (or validation) set, as training did at its end.

    data: where MNIST is, if not where the run found it (--data); it must be
    the same data, byte for byte. Raises OneLineError subclasses (one line).
    """
    from lstm_mnist.data import make_dataset, pixel_order, split_mnist
    from lstm_mnist.mnist_files import load_mnist
    from lstm_mnist.steps import Means
    from lstm_mnist.train import evaluate, make_eval_step

    record = read_finished_run(run_dir)  # refuses a bad folder before TensorFlow is imported
    config = record.config
    if which == VALIDATION and config.val_size == 0:
        raise RunFolderError(f"{record.run_dir} held out no validation images (--val-size 0); "
                             "evaluate it on the test set instead")
    model = load_model(record.run_dir, config)
    mnist = load_mnist(config.data if data is None else data, cache_dir=cache_dir, log=log)
    if record.data_fingerprint is not None and mnist.fingerprint != record.data_fingerprint:
        raise OneLineError(f"the data found ({mnist.source}) is not the data {record.run_dir} was trained on "
                           "(its fingerprint differs from the one in config.json); pass the run's own data "
                           "with --data", exit_code=2)
    splits = split_mnist(mnist, config.val_size, config.train_examples, config.test_examples,
                         config.pixels_per_step, pixel_order(config.permute_pixels, config.permutation_seed))
    images, labels = (splits.x_test, splits.y_test) if which == TEST else (splits.x_val, splits.y_val)
    # The batches training evaluated, in the same order, through the same compiled step.
    result, predictions = evaluate(make_eval_step(model), make_dataset(images, labels, config.batch_size), Means())
    prefix = "test" if which == TEST else "val"
    recorded = {"loss": record.metrics.get(f"{prefix}_loss"), "accuracy": record.metrics.get(f"{prefix}_accuracy")}
    return Evaluation(record.run_dir, which, result["loss"], result["accuracy"], recorded,
                      images, labels, predictions, mnist.source)


def precision_and_recall(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per digit, from a confusion matrix [true, predicted]: float [10] each, NaN where undefined (0 / 0)."""
    right = np.diag(counts).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return right / counts.sum(axis=0), right / counts.sum(axis=1)  # / answers "d", / images of d


def most_confused(counts: np.ndarray, limit: int = 5) -> list[tuple[int, int, int]]:
    """The largest off-diagonal cells, (true digit, predicted digit, count), largest first."""
    pairs = [(int(counts[true, predicted]), true, predicted)
             for true in range(NUM_CLASSES) for predicted in range(NUM_CLASSES)
             if true != predicted and counts[true, predicted]]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    return [(true, predicted, count) for count, true, predicted in pairs[:limit]]


def report(evaluation: Evaluation) -> list[str]:
    """The lines `lstm-mnist evaluate` prints."""
    from lstm_mnist.figures import confusion_matrix

    count = len(evaluation.labels)
    right = int(np.sum(evaluation.labels == evaluation.predictions))
    counts = confusion_matrix(evaluation.labels, evaluation.predictions)  # (10 true, 10 predicted)
    precision, recall = precision_and_recall(counts)
    recorded = evaluation.recorded["accuracy"]
    agreement = "" if recorded is None else (
        f"; metrics.json recorded {recorded:.2%}" + (" (the same)" if recorded == evaluation.accuracy
                                                     else " (DIFFERENT: the model file or the data changed)"))
    lines = [f"run: {evaluation.run_dir}",
             f"data: {evaluation.data_source}",
             f"{evaluation.which} accuracy {evaluation.accuracy:.2%} ({right:,} of {count:,} {evaluation.which} "
             f"images right), loss {evaluation.loss:.4f}{agreement}",
             "",
             "digit  precision  recall  images",
             *(f"{digit:>5}  {percent(precision[digit]):>9}  {percent(recall[digit]):>6}  "
               f"{int(counts[digit].sum()):>6,}" for digit in range(NUM_CLASSES)),
             "",
             'confusion matrix: a row per true digit, a column per predicted digit ("." = none)',
             "true  " + "".join(f"{digit:>6}" for digit in range(NUM_CLASSES)),
             *(f"{digit:>4}  " + "".join(f"{int(value):>6,}" if value else f"{'.':>6}" for value in counts[digit])
               for digit in range(NUM_CLASSES)),
             ""]
    confused = most_confused(counts)
    if confused:
        lines.append("most confused: " + ", ".join(f"{true} taken for {predicted} ({count}x)"
                                                   for true, predicted, count in confused))
    else:
        lines.append("most confused: none; every image is right")
    return lines


def percent(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.1%}"


def misclassified_picture(evaluation: Evaluation, limit: int = 100) -> tuple[np.ndarray | None, int]:
    """A grid of the first `limit` mistakes (figures.misclassified_figure), RGB uint8, and how many it shows.

    (None, 0) when there is no mistake to show.
    """
    from lstm_mnist.figures import misclassified_figure, sequences_as_pictures

    wrong = np.flatnonzero(evaluation.labels != evaluation.predictions)[:limit]
    if len(wrong) == 0:
        return None, 0
    return misclassified_figure(sequences_as_pictures(evaluation.images[wrong]), evaluation.labels[wrong],
                                evaluation.predictions[wrong]), len(wrong)
