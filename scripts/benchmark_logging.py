"""What full TensorBoard logging costs: training throughput with the default logging vs none.

    python scripts/benchmark_logging.py                     # 4 x (2 epochs logged, 2 epochs not), full MNIST
    python scripts/benchmark_logging.py --epochs 1 --repeats 2 --train-examples 10000   # quicker, noisier

Both variants run in this one process, interleaved in the order on, off,
off, on, on, off, ... (so neither always goes first), after one small
unmeasured warm-up run that pays the one-time costs (imports, font cache);
a neighbour that slows the machine down for a while slows both about
equally. Each run is a normal `train_and_evaluate` with the default
settings except `--tensorboard` and the sizes given here.

Three numbers per run:
- epoch throughput: training images per second of wall time over the whole
  epochs, from the first batch to after the epoch's summaries and checkpoint
  (the per-epoch seconds the run prints), i.e. what a user waits for;
- run seconds: the whole run, including start-up and the once-per-run
  summaries (graph trace, text, hparams);
- CPU seconds of this process for the whole run (all threads): the work
  done, which other programs on a shared machine disturb far less than
  wall time.

Wall and CPU time on a shared machine are noisy, so the logged runs also
report the time spent inside the logging code itself (metrics.json's
`tensorboard_seconds`, measured around every TensorBoard hook) as a share of
the run: a direct measurement that other programs disturb much less, though
it cannot see indirect costs.

The ratios are taken per repeat, between the two runs made one after the
other, and the median over repeats is printed. Nothing here is asserted:
timings are reported, never tested.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default: 2)")
    parser.add_argument("--repeats", type=int, default=4, help="runs of each variant, interleaved (default: 4)")
    parser.add_argument("--train-examples", type=int, default=0, help="training images (0 = all 55,000)")
    parser.add_argument("--val-size", type=int, default=5_000, help="validation images (default: 5,000)")
    parser.add_argument("--test-examples", type=int, default=0, help="test images (0 = all 10,000)")
    parser.add_argument("--units", type=int, default=128, help="LSTM units (default: 128)")
    args = parser.parse_args()

    from lstm_mnist.config import Config
    from lstm_mnist.train import train_and_evaluate

    epoch_line = re.compile(r"^epoch \d+/\d+ .* (\d+(?:\.\d+)?)s$")
    throughput = {True: [], False: []}  # tensorboard on/off -> images per second, one per run
    run_seconds = {True: [], False: []}
    cpu_seconds = {True: [], False: []}
    logging_share = []  # logged runs: seconds inside the TensorBoard hooks / run seconds
    with tempfile.TemporaryDirectory(prefix="benchmark-logging-") as log_dir:
        sizes = dict(val_size=args.val_size, test_examples=args.test_examples, units=args.units)
        train_and_evaluate(Config(epochs=1, train_examples=min(args.train_examples or 1000, 1000), log_dir=log_dir,
                                  **sizes), log=lambda line: None)  # warm-up, not measured
        for repeat in range(args.repeats):
            for tensorboard in ((True, False) if repeat % 2 == 0 else (False, True)):
                config = Config(epochs=args.epochs, train_examples=args.train_examples, log_dir=log_dir,
                                tensorboard=tensorboard, **sizes)
                epoch_seconds = []

                def log(line: str) -> None:
                    match = epoch_line.match(line)
                    if match:
                        epoch_seconds.append(float(match.group(1)))

                started, cpu_started = time.perf_counter(), time.process_time()
                result = train_and_evaluate(config, log=log)
                run_seconds[tensorboard].append(time.perf_counter() - started)
                cpu_seconds[tensorboard].append(time.process_time() - cpu_started)
                train_images = (args.train_examples or 55_000) * args.epochs
                throughput[tensorboard].append(train_images / sum(epoch_seconds))
                if tensorboard:
                    logging_share.append(result.metrics["tensorboard_seconds"] / result.metrics["seconds"])
                print(f"repeat {repeat + 1}/{args.repeats}  logging {'on ' if tensorboard else 'off'}  "
                      f"{throughput[tensorboard][-1]:7.0f} images/s  run {run_seconds[tensorboard][-1]:.1f}s  "
                      f"CPU {cpu_seconds[tensorboard][-1]:.1f}s  "
                      f"writing summaries {result.metrics['tensorboard_seconds']:.1f}s  "
                      f"test accuracy {result.metrics['test_accuracy']:.4f}", flush=True)

    def median_ratio(measure: dict) -> float:
        """Median over repeats of (logged / off), each from two neighbouring runs."""
        return statistics.median(on / off for on, off in zip(measure[True], measure[False]))

    throughput_ratio = median_ratio(throughput)
    print(f"epoch throughput, logging on / off: {throughput_ratio:.3f} "
          f"({1 - throughput_ratio:+.1%} slower with logging; medians {statistics.median(throughput[True]):.0f} "
          f"vs {statistics.median(throughput[False]):.0f} images/s)")
    print(f"run wall time, logging on / off:    {median_ratio(run_seconds):.3f}")
    print(f"run CPU time, logging on / off:     {median_ratio(cpu_seconds):.3f}")
    print(f"time inside the logging code:       {statistics.median(logging_share):.1%} of a logged run (median)")


if __name__ == "__main__":
    sys.exit(main())
