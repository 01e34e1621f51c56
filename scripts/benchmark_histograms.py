"""Why summaries.py buckets histograms with NumPy: tf.summary.histogram against it, on the dashboard's real sizes.

    python scripts/benchmark_histograms.py                  # the default model: 128 units, 128 digits
    python scripts/benchmark_histograms.py --repeats 1 --units 8 --digits 4   # a quick smoke run

Two workloads, each written once per `--summary-every-epochs` epochs:
- the weight and gradient histograms of the default model: every weight, its
  gradient, and the kernel, recurrent kernel and bias cut into four gates (34 tensors);
- the gate activations on 128 validation digits: four (128, 28, 128) tensors.

Both ways write the same buckets into one event file in this one process,
interleaved (tf, numpy, numpy, tf, ...) after one unmeasured warm-up of
each; the ratio per repeat is taken between neighbouring runs and the median
printed. Nothing is asserted: timings are reported, never tested.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="measurements of each way, interleaved (default: 9)")
    parser.add_argument("--units", type=int, default=128, help="LSTM units H (default: 128)")
    parser.add_argument("--digits", type=int, default=128, help="validation digits B for the gate activations")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from lstm_mnist.config import FEATURES, TIMESTEPS
    from lstm_mnist.gates import split_gates
    from lstm_mnist.summaries import histogram

    rng = np.random.default_rng(0)
    units = args.units
    weights = [rng.normal(size=shape).astype(np.float32)  # kernel, recurrent kernel, bias, Dense kernel and bias
               for shape in ((FEATURES, 4 * units), (units, 4 * units), (4 * units,), (units, 10), (10,))]
    per_gate = [block for fused in weights[:3] for block in split_gates(fused)]
    workloads = {
        f"weights and gradients ({2 * len(weights + per_gate)} tensors)": (weights + per_gate) * 2,
        f"gate activations (4 x {args.digits}x{TIMESTEPS}x{units})":
            [rng.random((args.digits, TIMESTEPS, units), dtype=np.float32) for _ in range(4)],
    }
    ways = {"tf.summary.histogram": tf.summary.histogram, "NumPy (summaries.histogram)": histogram}
    with tempfile.TemporaryDirectory(prefix="benchmark-histograms-") as log_dir:
        writer = tf.summary.create_file_writer(log_dir)

        def write(way, tensors) -> float:
            started = time.perf_counter()
            with writer.as_default(step=0):
                for index, values in enumerate(tensors):
                    way(f"h{index}", values)
            writer.flush()
            return time.perf_counter() - started

        for name, tensors in workloads.items():
            seconds = {way: [] for way in ways}
            for way in ways.values():
                write(way, tensors)  # warm-up
            for repeat in range(args.repeats):
                for label in (list(ways) if repeat % 2 == 0 else list(ways)[::-1]):
                    seconds[label].append(write(ways[label], tensors))
            library, numpy_way = seconds.values()
            ratio = statistics.median(a / b for a, b in zip(library, numpy_way))
            print(f"{name}: tf.summary.histogram {statistics.median(library) * 1e3:.1f} ms, "
                  f"NumPy {statistics.median(numpy_way) * 1e3:.1f} ms (medians); tf / NumPy {ratio:.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
