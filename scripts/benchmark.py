"""How fast, how lean and how accurate `lstm-mnist train` is, side by side with the same model trained by model.fit.

    python scripts/benchmark.py                     # all nine parts, full MNIST (the longest: README "Speed" times the parts)
    python scripts/benchmark.py --only throughput,logging --repeats 5
    python scripts/benchmark.py --quick             # tiny sizes, one repeat: that the script works (CI)

The nine parts, each printed as a table, and all of it written as JSON (--json):

  throughput  training images per second in steady state (the epochs after the first of each
              run), of `lstm-mnist train` (default logging, and --no-tensorboard), of the same
              model trained by `model.fit` (and unrolled), and of both with --cell scratch;
              each run in a new process, as a user starts one; ratios to model.fit
  logging     what TensorBoard costs: the same runs, default logging against --no-tensorboard,
              for the training part of an epoch (per-step hooks) and for the whole epoch
              (with the validation pass and the per-epoch histograms and pictures); and the
              whole epoch's ratio again from the default runs alone, less their hooks' own time
  steps       where a training step's time goes: the same batches through nested parts of
              the step (forward; + backward; + clipping and Adam; phase 1's loop of one call
              per step with its host syncs; ten steps per call; + the batch in two halves at
              once; + the loop unrolled, which is ours on a CPU), alternating
  startup     seconds from the command's start to the end of its first training step, for a
              one-step run (--train-examples 128 --val-size 128 --test-examples 128 --epochs 1
              --no-tensorboard), first with an empty data cache and then a second time, against
              model.fit's; and where the seconds go (imports, data, model, first step)
  memory      peak resident memory of a default run (--epochs, 6 by default: it still grows a
              little after the second) against model.fit's, each in its own process
  accuracy    default runs with seeds 0, 1, 2: validation and test accuracy after every epoch,
              the epoch and the wall time at which the test accuracy first reaches 99.0%;
              draws the curves (--figure)
  strategies  training images per second in steady state on one CPU (--strategy default)
              and mirrored over two logical devices split from the same CPU (--strategy
              mirrored --devices CPU:0,CPU:1), the same global batch, --no-tensorboard;
              each run in a new process (a CPU is split before TensorFlow starts), alternating
  threads     ours (default logging) and model.fit, each with TensorFlow's default threads and
              with 2 operations at once, 1 thread each (tf.config.threading), each run in a new
              process (a process sets its threads once), alternating; ratios at equal threads
  arithmetic  what the CPU allows: the floating-point operations of a training step (its matrix
              products, counted: flops_per_image), and how many per second TensorFlow's matrix
              products reach on this machine (one large product, and the LSTM's own product
              for half a batch and for a whole one), measured in a new process before the
              other parts and again after them; against them, the rate at which ours and
              model.fit do that arithmetic (from the throughput and steps parts, if run)

How the comparisons are made fair on a shared machine: every variant runs once per round,
each run in a new process (nothing left over from the run before it), the order rotating
from round to round, the first epoch of each run (tracing, warm-up) excluded; medians and
the range over rounds are printed. Wall time on a machine shared with other programs jumps
when a neighbour takes a core, so the CPU time of the run's process per image is printed
beside it: it is what the other programs disturb least, and the ratio to trust when the two
disagree. Nothing here is asserted; timings are reported, never tested.

model.fit's side is the stock Keras path for the same model: build_model(config), Adam with
the same schedule and global_clipnorm, SparseCategoricalCrossentropy(from_logits=True),
metrics=["accuracy"], the same float32 arrays, shuffled every epoch, the validation set
after every epoch. It trains on unshifted images: our side also pays for shifting them.

The per-epoch test accuracy of the accuracy part is measured by this script only, for this
table, after each epoch's checkpoint; the package touches the test set once, after training,
and the recipe was chosen on the validation set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("throughput", "logging", "steps", "startup", "memory", "accuracy", "strategies", "threads", "arithmetic")
ONE_STEP = ["--train-examples", "128", "--val-size", "128", "--test-examples", "128", "--epochs", "1",
            "--no-tensorboard"]
TARGET = 0.99


# ---------------------------------------------------------------------------
# Measuring one run of ours or of model.fit, inside this process
# ---------------------------------------------------------------------------

class Clock:
    """Wall and CPU seconds at named moments of a run."""

    def __init__(self):
        self.marks: list[tuple[str, float, float]] = []
        self.hook_seconds: list[float] = []  # at each epoch_end: the run's seconds inside TensorBoard's hooks so far

    def mark(self, name: str) -> None:
        self.marks.append((name, time.perf_counter(), time.process_time()))

    def epochs(self) -> list[dict]:
        """Per epoch: training wall/CPU seconds (data + steps) and whole-epoch seconds (+ validation, summaries);
        with TensorBoard on, also the epoch's seconds inside its hooks (dashboard.py's `timed`)."""
        found, start = [], None
        for name, wall, cpu in self.marks:
            if name == "train_start":
                start, train = (wall, cpu), None
            elif name == "train_end":
                train = (wall - start[0], cpu - start[1])
            elif name == "epoch_end":
                found.append({"train_seconds": train[0], "train_cpu": train[1],
                              "epoch_seconds": wall - start[0], "epoch_cpu": cpu - start[1]})
        for epoch, (before, after) in enumerate(zip([0.0] + self.hook_seconds, self.hook_seconds)):
            found[epoch]["hook_seconds"] = after - before
        return found


@contextlib.contextmanager
def instrumented(clock: Clock, after_epoch=None):
    """Mark the start and end of each epoch's training and the end of each epoch of `train_and_evaluate`.

    The package's functions are wrapped, not changed: training starts when the epoch's data is
    made (data.training_data), ends when train_epoch returns, and the epoch ends when
    Run.end_of_epoch returns (after validation, TensorBoard's summaries and the checkpoint).
    after_epoch(run, epoch): called after each epoch, outside the measured time.
    """
    import lstm_mnist.train as train_module
    from lstm_mnist.run import Run

    originals = (train_module.training_data, train_module.train_epoch, Run.end_of_epoch)

    def training_data(*args, **kwargs):
        clock.mark("train_start")
        return originals[0](*args, **kwargs)

    def train_epoch(*args, **kwargs):
        result = originals[1](*args, **kwargs)
        clock.mark("train_end")
        return result

    def end_of_epoch(run, epoch, *args, **kwargs):
        originals[2](run, epoch, *args, **kwargs)
        clock.mark("epoch_end")
        if run.dashboard:
            clock.hook_seconds.append(run.dashboard.seconds_writing)
        if after_epoch:
            after_epoch(run, epoch)

    train_module.training_data, train_module.train_epoch, Run.end_of_epoch = training_data, train_epoch, end_of_epoch
    try:
        yield
    finally:
        train_module.training_data, train_module.train_epoch, Run.end_of_epoch = originals


def run_ours(config, cache_dir=None, after_epoch=None) -> tuple[list[dict], dict]:
    """One `train_and_evaluate(config)`: its epochs' timings and its metrics."""
    from lstm_mnist.train import train_and_evaluate

    clock = Clock()
    with instrumented(clock, after_epoch):
        result = train_and_evaluate(config, log=lambda line: None, cache_dir=cache_dir)
    return clock.epochs(), result.metrics


def fit_model(config, steps_per_epoch: int, unroll: bool = False):
    """The same model, optimizer, schedule and clipping, compiled for model.fit (unroll: build_model's)."""
    import keras

    from lstm_mnist.model import build_model
    from lstm_mnist.train import learning_rate_schedule

    keras.utils.set_random_seed(config.seed)
    model = build_model(config, unroll=unroll)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(config, steps_per_epoch),
                                      global_clipnorm=config.clip_norm or None)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def run_fit(config, splits, on_event=None, unroll: bool = False) -> tuple[list[dict], object]:
    """model.fit for config.epochs epochs on `splits`: each epoch's timings, and the model.

    on_event(name): told "build_model_done" when training begins and "first_step_done" after the first step.
    """
    import keras

    clock = Clock()

    class Marks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            clock.mark("train_start")

        def on_train_begin(self, logs=None):
            if on_event:
                on_event("build_model_done")

        def on_train_batch_end(self, batch, logs=None):
            if on_event and batch == 0 and not clock.epochs():
                on_event("first_step_done")

        def on_test_begin(self, logs=None):
            clock.mark("train_end")

        def on_epoch_end(self, epoch, logs=None):
            if not splits.y_val.size:
                clock.mark("train_end")
            clock.mark("epoch_end")

    steps_per_epoch = math.ceil(len(splits.y_train) / config.batch_size)
    model = fit_model(config, steps_per_epoch, unroll)
    validation = (splits.x_val, splits.y_val) if splits.y_val.size else None
    x_train = splits.sequences(splits.train_images)  # float32 [N, T, F], the arrays model.fit is handed
    model.fit(x_train, splits.y_train, batch_size=config.batch_size, epochs=config.epochs, shuffle=True,
              validation_data=validation, verbose=0, callbacks=[Marks()])
    return clock.epochs(), model


def load_splits(config, cache_dir=None):
    from lstm_mnist.data import split_mnist
    from lstm_mnist.mnist_files import load_mnist

    mnist = load_mnist(config.data, cache_dir=cache_dir, log=lambda line: None)
    return split_mnist(mnist, config.val_size, config.train_examples, config.test_examples)


# ---------------------------------------------------------------------------
# Parts 1 and 2: throughput and the cost of logging
# ---------------------------------------------------------------------------

def throughput(args, log_dir: str) -> dict:
    """Alternating runs of every variant, each in a new process, as a user starts `lstm-mnist train`."""
    variants = {  # name -> (child kind, extra flags, extra environment)
        "ours": ("epochs", [], {}),
        "ours --no-tensorboard": ("epochs", ["--no-tensorboard"], {}),
        "model.fit": ("fit-epochs", [], {}),
        "model.fit, unrolled": ("fit-epochs", [], {"BENCHMARK_UNROLL": "1"}),
        "ours --cell scratch": ("epochs", ["--cell", "scratch"], {}),
        "model.fit --cell scratch": ("fit-epochs", ["--cell", "scratch"], {}),
    }
    if args.no_scratch:
        variants = {name: variant for name, variant in variants.items() if "scratch" not in name}
    if args.quick:  # its runs are too short to unroll: the unrolled model.fit would only add a compile
        del variants["model.fit, unrolled"]
    return alternating_runs(args, log_dir, variants, epochs=args.epochs)


def per_round(samples: list[dict], key: str) -> dict[int, float]:
    """The median of one measure over each round's steady-state epochs, by round."""
    rounds = {}
    for sample in samples:
        rounds.setdefault(sample["round"], []).append(sample[key])
    return {r: statistics.median(values) for r, values in rounds.items()}


def ratio_summary(numerator: dict[int, float], denominator: dict[int, float]) -> dict:
    ratios = sorted(numerator[r] / denominator[r] for r in numerator if r in denominator)
    return {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1], "rounds": len(ratios)}


def speed_table(result: dict, reference_for, against: str, key: str) -> tuple[str, dict]:
    """One row per variant: training images/s (median and range over the rounds), CPU ms per image, and its
    speed against the variant reference_for(name) names, round by round, in wall and in CPU time.

    reference_for(name): the variant to compare with (the row of the reference itself shows 1; None: no ratio).
    against: the ratio columns' heading; key: the ratios' JSON names, "wall_ratio_<key>" and "cpu_ratio_<key>".
    """
    images, samples = result["images_per_epoch"], result["samples"]
    rows, summary = [], {}
    for name, found in samples.items():
        wall, cpu = per_round(found, "train_seconds"), per_round(found, "train_cpu")
        rates = [images / seconds for seconds in wall.values()]
        entry = {"images_per_second_median": statistics.median(rates), "min": min(rates), "max": max(rates),
                 "cpu_ms_per_image": statistics.median(cpu.values()) / images * 1e3,
                 "threads_seen": sorted({tuple(sample.get("threads", ())) for sample in found})}  # [(inter, intra)]
        reference = reference_for(name)
        cells = ["1", "1"] if reference == name else ["", ""]
        if reference in samples and reference != name:  # time ratio = rate ratio; > 1: faster than the reference
            entry[f"wall_ratio_{key}"] = ratio_summary(per_round(samples[reference], "train_seconds"), wall)
            entry[f"cpu_ratio_{key}"] = ratio_summary(per_round(samples[reference], "train_cpu"), cpu)
            cells = [f"{r['median']:.2f} ({r['min']:.2f}..{r['max']:.2f})"
                     for r in (entry[f"wall_ratio_{key}"], entry[f"cpu_ratio_{key}"])]
        summary[name] = entry
        rows.append(f"| {name} | {entry['images_per_second_median']:,.0f} ({entry['min']:,.0f}..{entry['max']:,.0f}) "
                    f"| {entry['cpu_ms_per_image']:.3f} | {cells[0]} | {cells[1]} |")
    table = (f"| variant | training images/s, median (range) | CPU ms per image | {against}, wall | {against}, CPU |"
             "\n|---|---|---|---|---|\n" + "\n".join(rows))
    return table, summary


def throughput_table(result: dict) -> tuple[str, dict]:
    """The speed table against model.fit, and below it the cautious reading: ours' median against model.fit's
    fastest round, with model.fit's round by round (it has a slow mode on some machines, README "Speed")."""
    table, summary = speed_table(result, lambda name: "model.fit --cell scratch" if "scratch" in name
                                 else "model.fit", "speed vs model.fit", "to_fit")
    if "ours" in summary and "model.fit" in summary:
        fit_rounds = [result["images_per_epoch"] / seconds
                      for seconds in per_round(result["samples"]["model.fit"], "train_seconds").values()]
        cautious = summary["ours"]["images_per_second_median"] / max(fit_rounds)
        summary["ours"]["median_to_fits_fastest_round"] = cautious
        summary["model.fit"]["rounds_images_per_second"] = fit_rounds
        table += (f"\n\nours' median against model.fit's fastest round: {cautious:.2f} "
                  f"(model.fit's rounds: {', '.join(f'{rate:,.0f}' for rate in fit_rounds)} images/s)")
    return table, summary


def logging_table(result: dict) -> tuple[str, dict]:
    samples = result["samples"]
    on, off = samples.get("ours"), samples.get("ours --no-tensorboard")
    if not on or not off:
        return "(needs the throughput runs of ours and ours --no-tensorboard)", {}
    summary, rows = {}, []
    for part, wall_key, cpu_key in (("training part (per-step hooks)", "train_seconds", "train_cpu"),
                                    ("whole epoch (+ validation, per-epoch summaries)", "epoch_seconds",
                                     "epoch_cpu")):
        wall = ratio_summary(per_round(on, wall_key), per_round(off, wall_key))  # > 1: logging costs
        cpu = ratio_summary(per_round(on, cpu_key), per_round(off, cpu_key))
        summary[part] = {"wall_time_ratio": wall, "cpu_time_ratio": cpu}
        rows.append(f"| {part} | {wall['median']:.3f} ({wall['min']:.3f}..{wall['max']:.3f}) | "
                    f"{cpu['median']:.3f} ({cpu['min']:.3f}..{cpu['max']:.3f}) |")
    # A second estimate of the same ratio, from the runs with logging alone: each epoch against itself less the
    # seconds it spent inside TensorBoard's hooks. They run between compiled calls, with nothing else running,
    # so their time is added time; what they cost indirectly (caches, memory) this does not see.
    part = "whole epoch, from the hooks' own time: epoch / (epoch - hooks)"
    without_hooks = [{**sample, "epoch_seconds": sample["epoch_seconds"] - sample["hook_seconds"]} for sample in on]
    wall = ratio_summary(per_round(on, "epoch_seconds"), per_round(without_hooks, "epoch_seconds"))
    summary[part] = {"wall_time_ratio": wall}
    rows.append(f"| {part} | {wall['median']:.3f} ({wall['min']:.3f}..{wall['max']:.3f}) | |")
    table = ("| time with TensorBoard / without | wall, median (range) | CPU, median (range) |\n|---|---|---|\n"
             + "\n".join(rows))
    return table, summary


# ---------------------------------------------------------------------------
# Part 3: where a step's time goes
# ---------------------------------------------------------------------------

def step_parts(args) -> dict:
    """CPU and wall milliseconds per step of nested parts of the training step, on the same batches."""
    import keras
    import tensorflow as tf

    from lstm_mnist.config import Config
    from lstm_mnist.model import build_model
    from lstm_mnist.steps import STEPS_PER_CALL, Means, several_steps_per_call
    from lstm_mnist.train import learning_rate_schedule, loss_and_accuracy, make_train_step

    config = Config(units=args.units)
    steps = args.step_count
    splits = load_splits(Config(train_examples=steps * config.batch_size, val_size=args.val_size))
    x_train = splits.sequences(splits.train_images)  # (S * B, T, F)
    x = x_train.reshape(steps, config.batch_size, *x_train.shape[1:])  # (S, B, T, F)
    y = splits.y_train.reshape(steps, config.batch_size)  # (S, B)

    def parts(unroll=False):
        keras.utils.set_random_seed(0)
        model = build_model(config, unroll=unroll)
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate_schedule(config, 430))
        means = Means()
        return model, optimizer, means

    def forward():
        model, _, _ = parts()
        call = tf.function(lambda x, y: loss_and_accuracy(y, model(x, training=True)))
        return lambda: [call(x[i], y[i])[0].numpy() for i in range(steps)]

    def forward_backward():
        model, _, _ = parts()

        @tf.function
        def call(x, y):
            with tf.GradientTape() as tape:
                loss, _ = loss_and_accuracy(y, model(x, training=True))
            return tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))
        return lambda: [call(x[i], y[i]).numpy() for i in range(steps)]

    def train_step_only():
        model, optimizer, _ = parts()
        train_step = make_train_step(model, optimizer, config.clip_norm)
        return lambda: [train_step(x[i], y[i])[0].numpy() for i in range(steps)]

    def phase_one_loop():  # one call per step, the means updated and four numbers read back after each
        model, optimizer, means = parts()
        train_step = make_train_step(model, optimizer, config.clip_norm)

        def run():
            for i in range(steps):
                loss, accuracy, gradient_norm, _ = train_step(x[i], y[i])
                means.update(loss, accuracy, batch_size=config.batch_size)
                int(optimizer.iterations), float(loss), float(gradient_norm), float(accuracy)
        return run

    def several_per_call(k, shares=1, unroll=False):
        model, optimizer, means = parts(unroll)
        train_steps = several_steps_per_call(make_train_step(model, optimizer, config.clip_norm, shares), means,
                                             optimizer, model)
        return lambda: [train_steps(x[i:i + k], y[i:i + k])[0].numpy() for i in range(0, steps, k)]

    variants = {"forward (loss)": forward(), "forward + backward (gradients, their norm)": forward_backward(),
                "train_step: + clipping, Adam": train_step_only(),
                "phase 1's loop: one call per step, means, 4 reads": phase_one_loop()}
    for k in (1, 50, STEPS_PER_CALL):
        if k <= steps:
            variants[f"{k} step{'s' * (k > 1)} per call, means, 1 read per call"] = several_per_call(k)
    # What a default run does on a CPU (ours last: the reference): steps.in_shares, then steps.unroll_for.
    variants["+ the batch read in two halves at once (in_shares)"] = several_per_call(STEPS_PER_CALL, shares=2)
    variants["ours: + the loop over the rows unrolled (unroll_for)"] = several_per_call(STEPS_PER_CALL, 2, True)
    for run in variants.values():
        run()  # traces, warms up
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(args.repeats * 3):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            started, cpu_started = time.perf_counter(), time.process_time()
            variants[name]()
            wall[name].append((time.perf_counter() - started) / steps * 1e3)
            cpu[name].append((time.process_time() - cpu_started) / steps * 1e3)
    return {name: {"wall_ms_per_step": statistics.median(wall[name]), "wall_min": min(wall[name]),
                   "cpu_ms_per_step": statistics.median(cpu[name])} for name in names}


def steps_table(result: dict) -> str:
    full = list(result.values())[-1]
    lines = ["| part of a step (nested: each includes the one above) | wall ms per step, median (best) | "
             "CPU ms per step | CPU, share of ours |", "|---|---|---|---|"]
    for name, entry in result.items():
        lines.append(f"| {name} | {entry['wall_ms_per_step']:.1f} ({entry['wall_min']:.1f}) | "
                     f"{entry['cpu_ms_per_step']:.1f} | {entry['cpu_ms_per_step'] / full['cpu_ms_per_step']:.0%} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Parts 4 and 5: start-up and memory, each run in its own process
# ---------------------------------------------------------------------------

def train_quietly(flags: list[str]) -> None:
    """`lstm-mnist train FLAGS` in this process, its printing dropped; a refusal ends this process with its status."""
    from lstm_mnist.cli import main

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        code = main(["train", *flags])
    if code:
        raise SystemExit(code)


def config_of(flags: list[str]):
    """The Config that `lstm-mnist train FLAGS` would train."""
    from lstm_mnist.cli import build_parser, config_from_args

    return config_from_args(build_parser().parse_args(["train", *flags]))


def child(kind: str, flags: list[str]) -> None:
    """Run `lstm-mnist train FLAGS` (kinds "ours", "epochs") or model.fit's equivalent ("fit", "fit-epochs").

    "epochs" and "fit-epochs" print each epoch's timings as JSON (the parts that compare runs);
    "ours" and "fit" print marks (start-up and memory). Each mark is (wall-clock time, CPU seconds of this process so far): time.time(), so that the parent
    can measure it from the moment it started this process, and time.process_time(), which neighbours
    on a shared machine disturb less.
    """
    marks = {}

    def mark(name: str) -> None:
        marks.setdefault(name, (time.time(), time.process_time()))

    mark("python_started")
    from lstm_mnist.quiet import import_tensorflow_quietly

    import_tensorflow_quietly(for_the_command=True)  # as lstm-mnist imports them, for ours and model.fit alike
    if kind == "products":  # the arithmetic part: what this CPU's matrix products reach
        print("PRODUCTS " + json.dumps(product_rates(config_of(flags), quick=bool(os.environ.get("BENCHMARK_QUICK")))))
        return
    if kind in ("epochs", "fit-epochs"):  # the parts that compare runs: each epoch's timings, as JSON
        import tensorflow as tf

        if os.environ.get("BENCHMARK_THREADS"):  # the threads part: set before TensorFlow runs anything
            inter_op, intra_op = (int(n) for n in os.environ["BENCHMARK_THREADS"].split(","))
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if kind == "fit-epochs":
            config = config_of(flags)
            epochs = run_fit(config, load_splits(config), unroll=bool(os.environ.get("BENCHMARK_UNROLL")))[0]
        else:
            clock = Clock()
            with instrumented(clock):
                train_quietly(flags)
            epochs = clock.epochs()
        # The threads the run had (0: TensorFlow's own choice), for the parent to check that they were set.
        threads = [tf.config.threading.get_inter_op_parallelism_threads(),
                   tf.config.threading.get_intra_op_parallelism_threads()]
        print("EPOCHS " + json.dumps([{**epoch, "threads": threads} for epoch in epochs]))
        return
    import lstm_mnist.train as train_module

    config = config_of(flags)  # imports the package's command too
    mark("imported")
    for name in ("load_mnist", "build_model"):
        original = getattr(train_module, name)

        def wrapped(*args, _original=original, _name=name, **kwargs):
            result = _original(*args, **kwargs)
            mark(f"{_name}_done")
            return result

        setattr(train_module, name, wrapped)

    if kind == "ours":
        from lstm_mnist.run import Run

        after_steps = Run.after_steps

        def counted(run, *args):
            after_steps(run, *args)
            mark("first_step_done")

        Run.after_steps = counted
        train_quietly(flags)
    else:
        splits = load_splits(config)
        mark("load_mnist_done")
        _, model = run_fit(config, splits, on_event=mark)
        model.evaluate(splits.x_test, splits.y_test, batch_size=config.batch_size, verbose=0)
    mark("finished")
    print("MARKS " + json.dumps({"marks": marks, "peak_rss_mb": peak_resident_mb()}))


def peak_resident_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB.

    Not getrusage's ru_maxrss: Linux carries that over from the parent through fork and exec,
    so a child of a big process would report at least its parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def child_report(kind: str, flags: list[str], env: dict, what: str):
    """Run `benchmark.py --child KIND -- FLAGS` in a new process and return what it printed as JSON after its
    label (child() prints one line "MARKS ...", "EPOCHS ..." or "PRODUCTS ..."); what: the run, for an error."""
    process = subprocess.run([sys.executable, __file__, "--child", kind, "--", *flags], env=env,
                             capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"benchmark: {what} failed (exit {process.returncode}): {process.stderr[-2000:]}")
    label = {"ours": "MARKS ", "fit": "MARKS ", "products": "PRODUCTS "}.get(kind, "EPOCHS ")
    return json.loads([line for line in process.stdout.splitlines() if line.startswith(label)][-1][len(label):])


def run_child(kind: str, flags: list[str], env: dict) -> dict:
    """Start a child and wait for it: its marks in seconds since it was started, and its peak resident memory."""
    started = time.time()
    found = child_report(kind, flags, env, f"the {kind} run")
    return {**{name: wall - started for name, (wall, _) in found["marks"].items()},
            **{f"{name}_cpu": cpu for name, (_, cpu) in found["marks"].items()}, "peak_rss_mb": found["peak_rss_mb"]}


def child_env(cache_home: Path) -> dict:
    """Private caches: the decoded MNIST under cache_home; no Keras dataset cache, so every run reads the same copy."""
    return {**os.environ, "XDG_CACHE_HOME": str(cache_home), "KERAS_HOME": str(cache_home / "no-keras-home"),
            "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def startup(args, log_dir: str) -> dict:
    runs = {"ours, first run (empty data cache)": [], "ours, second run": [], "model.fit": []}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="benchmark-cache-") as cache:
            env = child_env(Path(cache))
            flags = [*ONE_STEP, "--log-dir", log_dir]
            order = [("ours, first run (empty data cache)", "ours"), ("ours, second run", "ours"),
                     ("model.fit", "fit")]
            if repeat % 2:  # ours' first run always comes first: it fills the data cache the other two read
                order = [order[0], order[2], order[1]]
            for name, kind in order:
                runs[name].append(run_child(kind, flags, env))
                print(f"  round {repeat + 1}/{args.repeats}  {name:36s} first step after "
                      f"{runs[name][-1]['first_step_done']:.2f}s", flush=True)
    return runs


def startup_table(runs: dict) -> tuple[str, dict]:
    phases = [("imported", "imports (Python, TensorFlow, Keras, the package)"), ("load_mnist_done", "data loaded"),
              ("build_model_done", "model built"), ("first_step_done", "first training step done"),
              ("finished", "run finished (evaluation, files)")]
    summary = {name: {key: statistics.median(run[key] for run in found) for key in found[0]}
               for name, found in runs.items()}
    header = "| seconds since the command started: wall (CPU) | " + " | ".join(runs) + " |"
    lines = [header, "|---" * (len(runs) + 1) + "|"]
    for key, label in phases:
        cells = [f"{summary[name][key]:.2f} ({summary[name][key + '_cpu']:.2f})" if key in summary[name] else ""
                 for name in runs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| peak resident memory, MB | " + " | ".join(f"{summary[name]['peak_rss_mb']:,.0f}"
                                                         for name in runs) + " |")
    return "\n".join(lines), summary


def memory(args, log_dir: str) -> dict:
    sizes = ["--train-examples", str(args.train_examples), "--val-size", str(args.val_size),
             "--test-examples", str(args.test_examples), "--units", str(args.units), "--epochs", str(args.epochs),
             "--log-dir", log_dir]
    runs = {"ours (default logging)": [], "model.fit": []}
    with tempfile.TemporaryDirectory(prefix="benchmark-cache-") as cache:
        env = child_env(Path(cache))
        run_child("ours", ONE_STEP + ["--log-dir", log_dir], env)  # fills the data cache, not measured
        for repeat in range(min(args.repeats, 2)):  # peaks barely move between runs: two rounds are enough
            for name, kind in (("ours (default logging)", "ours"), ("model.fit", "fit"))[::1 if repeat % 2 == 0
                                                                                        else -1]:
                runs[name].append(run_child(kind, sizes, env)["peak_rss_mb"])
                print(f"  round {repeat + 1}  {name:24s} peak {runs[name][-1]:,.0f} MB", flush=True)
    return runs


# ---------------------------------------------------------------------------
# Part 7: one CPU against two logical CPUs (distribution.py), each run in its own process
# ---------------------------------------------------------------------------

STRATEGY_VARIANTS = {
    "one CPU (--strategy default)": ["--strategy", "default"],
    "two logical CPUs (--strategy mirrored --devices CPU:0,CPU:1)": ["--strategy", "mirrored",
                                                                     "--devices", "CPU:0,CPU:1"],
}


def strategies(args, log_dir: str) -> dict:
    variants = {name: ("epochs", flags + ["--no-tensorboard"], {}) for name, flags in STRATEGY_VARIANTS.items()}
    return alternating_runs(args, log_dir, variants, epochs=2)


# --quick's runs by command: there a part reuses a run another part made the same way (its numbers mean nothing,
# and each process costs the CI test 5 to 10 s of CPU).
QUICK_RUNS: dict[tuple, list[dict]] = {}


def alternating_runs(args, log_dir: str, variants: dict, epochs: int) -> dict:
    """Every variant once per round, each run in a new process, the order rotating from round to round.

    variants: name -> (child kind: "epochs" for `lstm-mnist train`, "fit-epochs" for model.fit; extra flags;
    extra environment). Steady state: the epochs after the first of each run (tracing, warm-up).
    Returns {"images_per_epoch": N, "samples": {name: [{"train_seconds", "train_cpu", "epoch_seconds",
    "epoch_cpu", "threads", "round"}, ...]}}, one dict per steady-state epoch.
    """
    from lstm_mnist.config import MNIST_TRAIN_SIZE

    sizes = ["--train-examples", str(args.train_examples), "--val-size", str(args.val_size),
             "--test-examples", str(args.test_examples), "--units", str(args.units), "--epochs", str(epochs),
             "--log-dir", log_dir]
    images = args.train_examples or MNIST_TRAIN_SIZE - args.val_size
    samples = {name: [] for name in variants}
    names = list(variants)
    with tempfile.TemporaryDirectory(prefix="benchmark-cache-") as cache:
        if not args.quick:  # where the numbers mean nothing, the first measured run fills it
            run_epochs_child(ONE_STEP + ["--log-dir", log_dir], child_env(Path(cache)))  # not measured
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                kind, flags, extra_env = variants[name]
                command = (kind, *sizes, *flags, *sorted(extra_env.items()))
                reused = args.quick and command in QUICK_RUNS  # made by another part (the threads' defaults)
                if reused:
                    ran = QUICK_RUNS[command]
                else:
                    ran = run_epochs_child(sizes + flags, {**child_env(Path(cache)), **extra_env}, kind)
                    if args.quick:
                        QUICK_RUNS[command] = ran
                steady = ran[1:] or ran  # a 1-epoch run has only its warm-up epoch to show
                samples[name].extend({**epoch, "round": repeat} for epoch in steady)
                rates = [images / epoch["train_seconds"] for epoch in steady]
                where = "the same run as above" if reused else f"load average {os.getloadavg()[0]:.1f}"
                print(f"  round {repeat + 1}/{args.repeats}  {name:52s} {statistics.median(rates):7.0f} images/s "
                      f"(training part; {where})", flush=True)
    return {"images_per_epoch": images, "samples": samples}


def run_epochs_child(flags: list[str], env: dict, kind: str = "epochs") -> list[dict]:
    """`lstm-mnist train FLAGS` (kind "fit-epochs": model.fit's equivalent) in a new process: its epochs' timings."""
    return child_report(kind, flags, env, f"the run {' '.join(flags)}")


def strategies_table(result: dict) -> tuple[str, dict]:
    one_cpu = next(iter(result["samples"]))
    return speed_table(result, lambda name: one_cpu, "speed vs one CPU", "to_one_cpu")


# ---------------------------------------------------------------------------
# Part 8: TensorFlow's threads, ours and model.fit, each run in its own process
# ---------------------------------------------------------------------------

# name -> (inter-op threads: operations at once, intra-op threads: threads inside one operation); None: TF's own.
THREAD_SETTINGS = {"TensorFlow's default threads": None, "2 operations at once, 1 thread each": (2, 1)}


def threads(args, log_dir: str) -> dict:
    """Ours (default logging) and model.fit under each of THREAD_SETTINGS (a process chooses its threads once,
    before TensorFlow runs anything: hence a new process per run, as for every part that compares runs)."""
    variants = {f"{runner}, {setting}": (kind, [], {"BENCHMARK_THREADS": f"{counts[0]},{counts[1]}"} if counts else {})
                for setting, counts in THREAD_SETTINGS.items()
                for runner, kind in (("ours", "epochs"), ("model.fit", "fit-epochs"))}
    return alternating_runs(args, log_dir, variants, epochs=args.epochs)


def threads_table(result: dict) -> tuple[str, dict]:
    # ours against model.fit with the same threads; model.fit's rows have no ratio
    return speed_table(result, lambda name: name.replace("ours", "model.fit", 1) if name.startswith("ours") else None,
                       "ours vs model.fit, same threads", "to_fit")


# ---------------------------------------------------------------------------
# Part 6: accuracy, epochs and time to 99.0%
# ---------------------------------------------------------------------------

def accuracy(args, log_dir: str) -> dict:
    import numpy as np

    from lstm_mnist.config import Config

    results = {}
    for seed in args.seeds:
        config = Config(seed=seed, log_dir=log_dir, train_examples=args.train_examples, val_size=args.val_size,
                        test_examples=args.test_examples, units=args.units,
                        **({"epochs": args.epochs} if args.quick else {}))
        splits = load_splits(config)
        curve, extra = [], {"seconds": 0.0}
        started = time.perf_counter()

        def after_epoch(run, epoch, splits=splits, curve=curve, extra=extra):
            measuring = time.perf_counter()
            logits = run.model.predict(splits.x_test, batch_size=1000, verbose=0)
            test = float(np.mean(np.argmax(logits, axis=-1) == splits.y_test))
            validation = run.validation_means.result()
            curve.append({"epoch": epoch, "val_accuracy": validation["accuracy"] if validation else None,
                          "test_accuracy": test, "train_loss": run.train_means.result()["loss"],
                          "seconds": measuring - started - extra["seconds"]})
            extra["seconds"] += time.perf_counter() - measuring

        _, metrics = run_ours(config, after_epoch=after_epoch)
        reached = next((point for point in curve if point["test_accuracy"] >= TARGET), None)
        results[seed] = {"curve": curve, "test_accuracy": metrics["test_accuracy"],
                         "val_accuracy": metrics["val_accuracy"], "run_seconds": metrics["seconds"] - extra["seconds"],
                         "epochs": config.epochs, "epoch_reaching_target": reached["epoch"] if reached else None,
                         "seconds_to_target": reached["seconds"] if reached else None}
        print(f"  seed {seed}: test accuracy {metrics['test_accuracy']:.4f} after {config.epochs} epochs; "
              f"99.0% first at epoch {results[seed]['epoch_reaching_target']}", flush=True)
    return results


def accuracy_table(results: dict) -> tuple[str, dict]:
    lines = ["| seed | epochs | validation accuracy by epoch | test accuracy by epoch | final test accuracy | "
             "first epoch at 99.0% test | seconds to it | run seconds |", "|---|---|---|---|---|---|---|---|"]
    for seed, result in results.items():
        curve, reached = result["curve"], result["epoch_reaching_target"]
        validation = " ".join(f"{p['val_accuracy']:.2%}" if p["val_accuracy"] is not None else "-" for p in curve)
        test = " ".join(f"{p['test_accuracy']:.2%}" for p in curve)
        lines.append(f"| {seed} | {result['epochs']} | {validation} | {test} | {result['test_accuracy']:.2%} | "
                     f"{reached or 'not reached'} | {result['seconds_to_target'] or 0:.0f} | "
                     f"{result['run_seconds']:.0f} |")
    finals = [result["test_accuracy"] for result in results.values()]
    summary = {"median_test_accuracy": statistics.median(finals), "min": min(finals), "max": max(finals)}
    lines.append(f"\nmedian final test accuracy over {len(finals)} seed(s): {summary['median_test_accuracy']:.2%}")
    return "\n".join(lines), summary


def draw_recipe_figure(results: dict, path: Path) -> None:
    """Validation (solid) and test (dashed) accuracy after each epoch, one colour per seed, and the 99.0% line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (seed, result), colour in zip(results.items(), ["tab:blue", "tab:orange", "tab:green", "tab:red"]):
        epochs = [p["epoch"] for p in result["curve"]]
        if all(p["val_accuracy"] is not None for p in result["curve"]):
            axes[0].plot(epochs, [p["val_accuracy"] * 100 for p in result["curve"]], "-o", color=colour,
                         label=f"seed {seed}, validation")
        axes[0].plot(epochs, [p["test_accuracy"] * 100 for p in result["curve"]], "--s", color=colour,
                     label=f"seed {seed}, test", markersize=4)
        axes[1].plot(epochs, [p["train_loss"] for p in result["curve"]], "-o", color=colour, label=f"seed {seed}")
    axes[0].axhline(TARGET * 100, color="grey", linewidth=1)
    axes[0].set_ylim(bottom=max(90, axes[0].get_ylim()[0]))
    axes[0].set(xlabel="epoch", ylabel="accuracy, %", title="accuracy after each epoch (grey: 99.0%)")
    axes[1].set(xlabel="epoch", ylabel="mean training loss", title="training loss (shifted images)", yscale="log")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------
# Part 9: the arithmetic of a step, against what this CPU's matrix products reach
# ---------------------------------------------------------------------------

def flops_per_image(timesteps: int, features: int, units: int, classes: int = 10) -> int:
    """Floating-point operations of one training step per image: its matrix products, 2 per multiply-add.

    Each row t, forward: the four gates' pre-activations z_t = x_t W + h_{t-1} U, 4H sums of F + H products.
    Backward, from dz_t: dW += x_t^T dz_t and dU += h_{t-1}^T dz_t, together as many as the forward, and
    dh_{t-1} = dz_t U^T, 4H by H, except at the first row, whose h_{-1} is zeros and needs none. The
    logits h_T V: forward, dV and dh_T. Left out, the gates' sigmoids, tanh and products (tens of operations
    per unit and row) and Adam (per weight, not per image): 1% to 2% more.
    For LSTM-128 on 28 rows of 28, 12,492,288: the MatMul operations of the traced step (tests/test_scripts.py).
    """
    gates = 4 * units  # i, f, g, o
    forward = timesteps * 2 * (features + units) * gates
    backward = forward + (timesteps - 1) * 2 * units * gates
    return forward + backward + 3 * 2 * units * classes


def product_rates(config, quick: bool) -> dict:
    """GFLOP/s that TensorFlow's float32 matrix products reach on this machine: per shape, the best of 7 rounds.

    Each timing is of a compiled call that adds up many products of one matrix with different ones (so that
    none can be shared), independent of one another: TensorFlow may run them side by side, on every core,
    the best case for the shape. The shapes: one large product, and the LSTM's own, [x_t, h_{t-1}] by [W; U]
    for the rows of half a batch (what each core multiplies with in_shares) and of a whole batch. Every
    round times each shape once, the order rotating, as the parts that compare runs do: a slow spell of a
    shared machine then falls on one round of every shape, not on all the rounds of one.
    """
    import tensorflow as tf

    size, width = (256, 2) if quick else (2048, 3)  # (n, products per call) of the large product
    rows, inputs, gates = config.batch_size, config.features + config.units, 4 * config.units
    shapes = {f"one large product, {size} x {size} by {size} x {size}": (size, size, size, width),
              f"the LSTM's product, half a batch: {rows // 2} x {inputs} by {inputs} x {gates}":
                  (rows // 2, inputs, gates, 20 if quick else 400),
              f"the LSTM's product, a whole batch: {rows} x {inputs} by {inputs} x {gates}":
                  (rows, inputs, gates, 10 if quick else 200)}
    calls = {}
    for name, (m, k, n, count) in shapes.items():
        left = tf.random.normal([m, k])
        rights = [tf.Variable(tf.random.normal([k, n])) for _ in range(count)]

        @tf.function
        def products(left, rights=rights, m=m, n=n):
            total = tf.zeros([m, n])
            for right in rights:
                total += tf.matmul(left, right)
            return total

        products(left).numpy()  # traced, warmed up
        calls[name] = (products, left, 2 * m * k * n * count)
    best, names = {name: math.inf for name in shapes}, list(shapes)
    for round_ in range(7):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            products, left, _ = calls[name]
            started = time.perf_counter()
            products(left).numpy()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: calls[name][2] / best[name] / 1e9 for name in names}


def measure_product_rates(args) -> dict:
    """product_rates in a new process, as every run here: nothing left over from this one's TensorFlow."""
    return child_report("products", ["--units", str(args.units)],
                        {**os.environ, "BENCHMARK_QUICK": "1" if args.quick else ""}, "measuring the matrix products")


def arithmetic_table(before: dict, after: dict, report: dict, config) -> tuple[str, dict]:
    """The product rates (before and after the other parts), and the rate at which the measured runs and steps
    did a step's arithmetic (flops_per_image x images per second), each as a share of one large product's."""
    flops = flops_per_image(config.timesteps, config.features, config.units)
    large_product = next(iter(before))  # product_rates measures it first
    large = statistics.mean([before[large_product], after[large_product]])
    rows, summary = [], {"flops_per_image": flops, "products": {}, "training": {}}
    for name in before:
        rate = statistics.mean([before[name], after[name]])
        summary["products"][name] = {"gflops_before": before[name], "gflops_after": after[name]}
        rows.append(f"| {name} | {before[name]:.0f} / {after[name]:.0f} | {rate / large:.0%} |")
    done = {}  # what the other parts measured: name -> images per second
    for name, entry in report.get("throughput", {}).items():
        if "scratch" not in name:  # the same model size, but written out by hand: counted for Keras's cell only
            done[f"{name} (throughput part, median)"] = entry["images_per_second_median"]
    for name, entry in report.get("steps", {}).items():
        # Whole training steps only: not the two "forward" rows (no clipping or Adam), nor phase 1's loop
        # (the "1 step per call" row again, with four reads per step instead of one).
        if not name.startswith(("forward", "phase")):
            done[f"{name} (steps part, median)"] = config.batch_size / entry["wall_ms_per_step"] * 1e3
    for name, images_per_second in done.items():
        rate = images_per_second * flops / 1e9
        summary["training"][name] = {"gflops": rate, "share_of_large_product": rate / large}
        rows.append(f"| {name} | {rate:.0f} | {rate / large:.0%} |")
    table = (f"a training step: {flops:,} floating-point operations per image in its matrix products\n\n"
             "| what | GFLOP/s (products: before / after the other parts) | share of one large product's |\n"
             "|---|---|---|\n" + "\n".join(rows))
    return table, summary


# ---------------------------------------------------------------------------
# The machine, and the driver
# ---------------------------------------------------------------------------

def machine() -> dict:
    from lstm_mnist.quiet import import_tensorflow_quietly

    import_tensorflow_quietly(for_the_command=True)  # without TensorFlow's start-up lines, as lstm-mnist does
    import keras
    import tensorflow as tf

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "device": ", ".join(names) if names else "CPU (no GPU)",
            "load_average_at_start": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to run: {', '.join(PARTS)}")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of alternating runs (default: 3)")
    parser.add_argument("--epochs", type=int, default=6,
                        help="epochs per throughput run, the first is warm-up (default: 6, a default run's)")
    parser.add_argument("--train-examples", type=int, default=0, help="training images (0 = all 55,000)")
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--test-examples", type=int, default=0, help="test images (0 = all 10,000)")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--step-count", type=int, default=100, help="batches per round of the steps part")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the accuracy part (default: 0,1,2)")
    parser.add_argument("--no-scratch", action="store_true", help="leave out the --cell scratch variants")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repeat: shows that everything runs, its numbers mean nothing")
    parser.add_argument("--json", type=Path, default=None, help="also write every number here as JSON")
    parser.add_argument("--figure", type=Path, default=None,
                        help="draw the accuracy curves here (default: docs/images/recipe.png, not with --quick)")
    parser.add_argument("--redraw", type=Path, default=None, metavar="JSON",
                        help="only draw --figure again from the accuracy part of an earlier --json")
    parser.add_argument("--child", choices=("ours", "fit", "epochs", "fit-epochs", "products"),
                        help=argparse.SUPPRESS)
    parser.add_argument("child_flags", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs, args.units, args.no_scratch, args.step_count = 1, 2, 8, True, 10
        args.train_examples, args.val_size, args.test_examples = 256, 64, 64
        args.seeds = "0"
    for flag, value in (("--repeats", args.repeats), ("--epochs", args.epochs), ("--step-count", args.step_count),
                        ("--units", args.units)):
        if value < 1:
            parser.error(f"{flag} must be 1 or more, got {value}")
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2; got {args.seeds!r}")
    args.parts = [part.strip() for part in args.only.split(",")]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if args.figure is None and not args.quick:
        args.figure = ROOT / "docs" / "images" / "recipe.png"
    for flag, path in (("--json", args.json), ("--figure", args.figure)):  # refused now, not after the runs
        if path is not None and not can_write(path):
            parser.error(f"{flag} {path}: cannot write a file there; give a file path in a writable folder")
    return args


def can_write(path: Path) -> bool:
    """Whether a file can be written at `path`: opened for appending (nothing in it changes), and removed
    again if nothing was there before (a symlink, even a dangling one, is left in place)."""
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError:
        return False
    if not existed:
        path.unlink()
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args.child, args.child_flags)
        return 0
    if args.redraw:
        draw_recipe_figure(json.loads(args.redraw.read_text())["accuracy"]["runs"], args.figure)
        print(f"figure: {args.figure}")
        return 0
    report = {"machine": machine(), "settings": {key: (str(value) if isinstance(value, Path) else value)
                                                  for key, value in vars(args).items() if key != "child_flags"}}
    print("machine: " + ", ".join(f"{key} {value}" for key, value in report["machine"].items()), flush=True)
    tables = []
    if "arithmetic" in args.parts:
        print("arithmetic: matrix products, in a new process (again after the other parts)", flush=True)
        products_before = measure_product_rates(args)
    with tempfile.TemporaryDirectory(prefix="benchmark-logs-") as log_dir:
        if "throughput" in args.parts or "logging" in args.parts:
            print("throughput and logging: alternating runs", flush=True)
            result = throughput(args, log_dir)
            table, report["throughput"] = throughput_table(result)
            tables.append(("Training throughput, steady state", table))
            table, report["logging"] = logging_table(result)
            tables.append(("What TensorBoard logging costs (ours)", table))
        if "steps" in args.parts:
            print(f"steps: parts of a step, {args.step_count} batches each, alternating", flush=True)
            report["steps"] = step_parts(args)
            tables.append(("Where a step's time goes", steps_table(report["steps"])))
        if "startup" in args.parts:
            print("startup: one-step runs, each in a new process", flush=True)
            table, report["startup"] = startup_table(startup(args, log_dir))
            tables.append(("Start-up of a one-step run (medians)", table))
        if "memory" in args.parts:
            if args.quick and "startup" in report:  # the one-step runs' peaks: no more processes to start
                runs = {"ours (default logging)": [report["startup"]["ours, second run"]["peak_rss_mb"]],
                        "model.fit": [report["startup"]["model.fit"]["peak_rss_mb"]]}
            else:
                print(f"memory: {args.epochs}-epoch runs, each in a new process", flush=True)
                runs = memory(args, log_dir)
            report["memory"] = {name: {"peak_rss_mb_median": statistics.median(values), "runs": values}
                                for name, values in runs.items()}
            tables.append((f"Peak resident memory, {args.epochs} epochs",
                           "| run | peak resident memory, MB (each run) |\n|---|---|\n" +
                           "\n".join(f"| {name} | {', '.join(f'{v:,.0f}' for v in values)} |"
                                     for name, values in runs.items())))
        if "accuracy" in args.parts:
            print(f"accuracy: default runs, seeds {args.seeds}", flush=True)
            results = accuracy(args, log_dir)
            table, summary = accuracy_table(results)
            report["accuracy"] = {"runs": results, **summary}
            tables.append(("Accuracy of the default recipe", table))
            if args.figure:
                draw_recipe_figure(results, args.figure)
                print(f"figure: {args.figure}")
        if "strategies" in args.parts:
            print("strategies: one CPU against two logical CPUs, each run in a new process, alternating", flush=True)
            table, report["strategies"] = strategies_table(strategies(args, log_dir))
            tables.append(("One CPU against two logical CPUs, steady state", table))
        if "threads" in args.parts:
            print("threads: ours and model.fit with TensorFlow's default threads and with 2 operations at once, "
                  "1 thread each; each run in a new process, alternating", flush=True)
            table, report["threads"] = threads_table(threads(args, log_dir))
            tables.append(("TensorFlow's threads, ours and model.fit, steady state", table))
    if "arithmetic" in args.parts:
        from lstm_mnist.config import Config

        table, report["arithmetic"] = arithmetic_table(products_before, measure_product_rates(args), report,
                                                       Config(units=args.units))
        tables.append(("The arithmetic of a step, against this CPU's matrix products", table))
    report["machine"]["load_average_at_end"] = os.getloadavg()[0]
    for title, table in tables:
        print(f"\n## {title}\n\n{table}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nJSON: {args.json}")
    else:
        print("\n" + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
