"""Training on several devices or machines: TensorFlow's tf.distribute, behind a few calls.

train.py reads as if there were one device: a batch of B images, its mean loss, the gradient,
one step. With --strategy mirrored or multi_worker the same step runs on several replicas.
A *replica* is one copy of the model (its weights and Adam's moments) on one device: a GPU, or
a logical device carved out of the CPU; in a multi-worker run, on the devices of several
machines. Every replica holds the same weights before and after every step; what differs is
the part of the batch each one reads:

                          the batch: B images, x [B, T, F], y [B]
                                          |  split_batch: replica r reads images
                                          |  r*B//R .. (r+1)*B//R - 1 (about B/R each)
               +--------------------------+--------------------------+
           replica 0                  replica 1         ...      replica R-1
           logits, its loss share     logits, its loss share       ...
           its gradient g_0           its gradient g_1             ...
               +--------------------------+--------------------------+
                                          |  all-reduce (sum_over_replicas): every
                                          |  replica receives g = g_0 + g_1 + ... + g_(R-1)
               the same global norm, the same clipping, the same Adam step, on every replica

Why each replica divides its loss by the whole batch's size. On one device the loss is the mean
over the batch, (sum over B images) / B, and its gradient is the mean of the images' gradients.
A replica holds b of the B images. Were it to take its own mean, (sum over b) / b, the summed
gradients would come out R times too large (and unevenly weighted when the last batch does not
split evenly). So each replica divides its sum by B (train.loss_and_accuracy's batch_size, as
tf.nn.compute_average_loss does): its share of the batch's mean. The shares add up to the mean,
and their gradients to its gradient. The replicas compute what one device computes, up to the
order of float32 additions; tests/test_distribution.py compares the weights after a run. Except
with --dropout: Keras mirrors the state of the generator that draws the masks, so every replica
draws the same masks for its share, where one device draws different ones for all B images.

What all-reduce does. Each replica contributes a list of tensors and all of them receive the
elementwise sum: one reduction, its result delivered to all. Between the devices of one machine
MirroredStrategy does it with NCCL on GPUs (through one device on CPUs); between machines
MultiWorkerMirroredStrategy does it over the network (collective operations in a ring over gRPC,
or NCCL between GPUs). It is the only communication of a step, as large as the weights, and every
replica waits for it.

Who the chief is. In a multi-worker run every worker runs the same command and takes every
step. One of them, the chief (the task "chief" if TF_CONFIG names one, otherwise worker 0),
keeps the run folder: TensorBoard, the checkpoints, model.keras, metrics.json. The others go
through the same motions, because TensorFlow asks every worker to take part in a save, but write
into a temporary folder of their own, deleted when they end (`folder_of_a_worker`). To resume,
every worker reads the run's checkpoint (each must see the run folder, e.g. a shared file
system); the others copy it into their temporary folder first, and never write to it.

The batch size and the learning rate. --batch-size is the whole batch B, however many replicas
share it: the same flags train the same model on one CPU, on eight GPUs or on several
machines, and a checkpoint written under one strategy resumes under another. With R replicas
each computes about B/R images per step; if that leaves GPUs idle, raise --batch-size (say 128
per GPU) and then --learning-rate yourself. Nothing is scaled behind your back; the README's
"Running on more hardware" gives the usual rule.

Validation and test are not distributed: each worker evaluates on one device, as it would alone
(a small part of the time). Nothing in this module imports TensorFlow at import time: the command
checks --devices and TF_CONFIG before spending seconds importing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

from lstm_mnist.errors import OneLineError, plain_reason

# "GPU:1", "gpu:1", "/gpu:1", "/device:GPU:1": the ways TensorFlow itself writes a device.
DEVICE = re.compile(r"/?(?:device:)?(CPU|GPU):(\d+)", re.IGNORECASE)
MOST_LOGICAL_CPUS = 64  # a CPU split into more logical devices than this is a typo, not a plan
EXAMPLE_TF_CONFIG = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                     '"task": {"type": "worker", "index": 0}}\'')


class Worker(NamedTuple):
    """This process's place in a run: `index` of `count` workers; the chief keeps the run folder."""

    index: int
    count: int
    chief: bool


ALONE = Worker(0, 1, True)


# ---------------------------------------------------------------------------
# Checks that need no TensorFlow: --devices and TF_CONFIG
# ---------------------------------------------------------------------------


def parse_devices(text: str) -> list[str]:
    """--devices "GPU:0, gpu:1" -> ["GPU:0", "GPU:1"]; ValueError, naming the flag, for anything else."""
    devices = []
    for name in (part.strip() for part in text.split(",")):
        match = DEVICE.fullmatch(name)
        if not match:
            raise ValueError(f"--devices takes devices separated by commas, such as GPU:0,GPU:1 or CPU:0,CPU:1; "
                             f"got {name!r}")
        devices.append(f"{match[1].upper()}:{int(match[2])}")
    if len(set(devices)) < len(devices):
        raise ValueError(f"--devices names a device twice ({text}); name each once")
    kinds = {device.split(":")[0] for device in devices}
    if len(kinds) > 1:
        raise ValueError(f"--devices mixes CPUs and GPUs ({text}); mirror over GPUs, or over CPU devices, not both")
    if kinds == {"CPU"} and max(int(device.split(":")[1]) for device in devices) >= MOST_LOGICAL_CPUS:
        raise ValueError(f"--devices splits the CPU into at most {MOST_LOGICAL_CPUS} logical devices "
                         f"(CPU:0 to CPU:{MOST_LOGICAL_CPUS - 1}); got {text}")
    return devices


def read_tf_config(environ=os.environ) -> dict | None:
    """The TF_CONFIG environment variable, checked; None if it is unset or empty. OneLineError (exit 2) if malformed.

    TF_CONFIG is TensorFlow's standard description of a cluster, read by MultiWorkerMirroredStrategy:
    {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}, the same
    cluster on every machine, each with its own task. A "chief" job of one task may come first.
    """
    text = environ.get("TF_CONFIG", "")
    if not text.strip():
        return None

    def refuse(problem: str):
        raise OneLineError(f"TF_CONFIG {problem}; it names the cluster and this process's task, e.g. "
                           f"{EXAMPLE_TF_CONFIG}", exit_code=2)

    try:
        spec = json.loads(text)
    except ValueError as error:
        refuse(f"is not JSON ({error})")
    if not isinstance(spec, dict):
        refuse(f"must be a JSON object, not a {type(spec).__name__}")
    cluster, task = spec.get("cluster"), spec.get("task")
    if not isinstance(cluster, dict) or not cluster:
        refuse('has no "cluster" object listing the workers')
    others = sorted(set(cluster) - {"chief", "worker"})
    if others:
        refuse(f'names the job(s) {", ".join(others)}: only "chief" and "worker" take part in '
               "MultiWorkerMirroredStrategy")
    addresses = []
    for job, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts or not all(isinstance(host, str) for host in hosts):
            refuse(f'"cluster": "{job}" must be a list of "host:port" strings')
        for host in hosts:
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit() or not 0 < int(port) < 65536:
                refuse(f'"cluster": "{job}" holds {host!r}, which is not "host:port" (a port from 1 to 65535)')
        addresses += hosts
    if len(cluster.get("chief", [])) > 1:
        refuse('names more than one "chief"')
    if len(set(addresses)) < len(addresses):
        refuse("names the same host:port twice")
    if not isinstance(task, dict):
        refuse('has no "task" object saying which task of the cluster this process is')
    job, index = task.get("type"), task.get("index")
    if job not in cluster:
        refuse(f'"task": "type" is {job!r}, which is not a job of the cluster ({", ".join(cluster)})')
    if type(index) is not int or not 0 <= index < len(cluster[job]):
        refuse(f'"task": "index" is {index!r}, but the "{job}" job has tasks 0 to {len(cluster[job]) - 1}')
    return spec


def this_worker(config, environ=os.environ) -> Worker:
    """Where this process stands: alone, or one of a multi-worker run's workers (from TF_CONFIG).

    Raises OneLineError (exit 2) for --strategy multi_worker without TF_CONFIG, or a malformed one.
    """
    if config.strategy not in ("auto", "multi_worker"):
        return ALONE  # TF_CONFIG is ignored: --strategy default and mirrored train on this machine alone
    spec = read_tf_config(environ)
    if spec is None:
        if config.strategy == "multi_worker":
            raise OneLineError("--strategy multi_worker needs the TF_CONFIG environment variable, which names the "
                               f"workers and this one's place among them, e.g. {EXAMPLE_TF_CONFIG}", exit_code=2)
        return ALONE
    cluster, task = spec["cluster"], spec["task"]
    chiefs = len(cluster.get("chief", []))
    count = chiefs + len(cluster.get("worker", []))
    if config.strategy == "auto" and count == 1:
        return ALONE
    index = task["index"] if task["type"] == "chief" else chiefs + task["index"]  # the chief comes first
    return Worker(index, count, chief=index == 0)


# ---------------------------------------------------------------------------
# The strategy: made once, first of all, by train.py's driver
# ---------------------------------------------------------------------------


def strategy_for(config, log: Callable[[str], None] = print):
    """The tf.distribute.Strategy that --strategy asks for, and a line saying what it is.

    Made before TensorFlow runs anything: a CPU can only be split into logical devices, and
    MultiWorkerMirroredStrategy can only join its cluster, while TensorFlow has not yet set up its
    devices. --strategy default is tf.distribute's default strategy: no replicas, one device, and
    strategy.run and strategy.scope() change nothing.
    """
    import tensorflow as tf

    worker = this_worker(config)
    name = config.strategy
    if name == "auto":
        name = ("multi_worker" if worker.count > 1
                else "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default")
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices_to_mirror(config.devices))
    else:
        # TensorFlow waits in C++ for every worker to join, and answers no signal meanwhile.
        log(f"strategy: multi_worker: worker {worker.index} of {worker.count} is waiting for all of TF_CONFIG's "
            "workers to join (a worker waiting for one that never comes answers no Ctrl-C: stop it with kill -9)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size < replicas:
        raise OneLineError(f"--batch-size {config.batch_size} is smaller than the {replicas} replicas, and each "
                           f"replica reads its share of every batch: use a --batch-size of at least {replicas}, "
                           "or fewer devices", exit_code=2)
    if name != "default":
        devices = ", ".join(device.split("device:")[-1] for device in strategy.extended.worker_devices)
        where = f"on {devices}" if worker.count == 1 else \
            f"in all; this is worker {worker.index} of {worker.count}{' (the chief)' if worker.chief else ''}, on {devices}"
        shares = (f"each batch of {config.batch_size} is split into {replicas} shares of about "
                  f"{config.batch_size // replicas}") if replicas > 1 else "each batch is computed whole, as alone"
        log(f"strategy: {name}, {replicas} replica{'s' if replicas > 1 else ''} {where}; {shares}")
    return strategy


def devices_to_mirror(text: str) -> list[str] | None:
    """MirroredStrategy's devices for --devices: None (every GPU, or the CPU if there is none) when empty.

    CPU:0,CPU:1 splits the one CPU into two logical devices, which share its cores: a way to try
    mirrored training, and to test it, on a machine without GPUs; not a way to train faster.
    """
    import tensorflow as tf

    if not text:
        return None
    try:
        devices = parse_devices(text)
    except ValueError as error:
        raise OneLineError(str(error), exit_code=2) from None
    indices = [int(device.split(":")[1]) for device in devices]
    if devices[0].startswith("CPU"):
        split_the_cpu(max(indices) + 1, text)
        return devices
    gpus = len(tf.config.list_physical_devices("GPU"))
    missing = [device for device, index in zip(devices, indices) if index >= gpus]
    if missing:
        here = f"{gpus} GPU{'s' if gpus != 1 else ''} (GPU:0 to GPU:{gpus - 1})" if gpus else "no GPU"
        raise OneLineError(f"--devices {text}: TensorFlow finds {here} on this machine, not {', '.join(missing)}; "
                           "name GPUs it finds, or CPU:0,CPU:1 to split the CPU", exit_code=2)
    return devices


def split_the_cpu(count: int, text: str) -> None:
    """Make the physical CPU `count` logical devices, CPU:0 to CPU:<count - 1> (once per process)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if count == 1 or (current is not None and len(current) == count):
        return  # nothing to split, or split so already (a second run in this process)
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise OneLineError(f"--devices {text}: TensorFlow has already set up this process's devices, so the CPU "
                           f"can no longer be split into {count}; run it in a new process (as lstm-mnist "
                           "train always is)", exit_code=2) from None


def is_chief(strategy) -> bool:
    """Whether this process keeps the run folder: always, except in a multi-worker run's other workers."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


# ---------------------------------------------------------------------------
# Inside the compiled training call (steps.several_steps_per_call and train.make_train_step)
# ---------------------------------------------------------------------------


def split_batch(strategy, x, y):
    """The arguments of the step on each replica: its share of the batch, and the whole batch's size B.

    x float32 [B, T, F], y int32 [B] -> (x float32 [b, T, F], y int32 [b], B), the shares as
    per-replica values for strategy.run: replica r reads images r*B//R to (r+1)*B//R - 1, so
    shares differ by one image at most (and a last batch smaller than R leaves some empty, which
    adds nothing). One replica: the batch itself. In a multi-worker run every worker holds the
    whole batch (each epoch's data follows from (seed, epoch)), and takes its replicas' shares.
    """
    import tensorflow as tf

    batch_size = tf.shape(y)[0]
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return x, y, batch_size

    def share(values):
        def of_replica(context):
            r = context.replica_id_in_sync_group  # counted over all workers
            return values[r * batch_size // replicas:(r + 1) * batch_size // replicas]  # (B, ...) -> (b, ...)

        return strategy.experimental_distribute_values_from_function(of_replica)

    return share(x), share(y), batch_size


def sum_over_replicas(values: list) -> list:
    """All-reduce, on each replica inside strategy.run: every replica receives the sum of all replicas' values.

    One replica (the default strategy): the values as they are, and no operation is added.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def whole_batch(strategy, per_replica):
    """The step's (loss, accuracy, gradient norm, gradients) for the batch, from each replica's (strategy.run).

    The loss and accuracy shares are summed (each is its images' sum / B); the gradient norm and the
    gradients, computed from the summed gradients, are the same on every replica: the first's are taken.
    """
    import tensorflow as tf

    loss, accuracy, gradient_norm, gradients = per_replica
    if strategy.num_replicas_in_sync == 1:
        return loss, accuracy, gradient_norm, gradients
    loss, accuracy = (strategy.reduce(tf.distribute.ReduceOp.SUM, share, axis=None) for share in (loss, accuracy))
    first = strategy.experimental_local_results
    return loss, accuracy, first(gradient_norm)[0], [first(gradient)[0] for gradient in gradients]


def step_sums_the_gradients(optimizer) -> None:
    """Stop a Keras optimizer from summing the gradients over the replicas: the step has (sum_over_replicas).

    Keras 3's optimizer all-reduces the gradients itself, inside apply_gradients, so a step that
    took their norm and clipped them before would see only its own replica's share (the norm of
    a part, not of the batch's gradient: the clipping would differ from one device's). So the
    step sums them first, and the optimizer's own sum, which would then count them R times, is
    replaced by a pass-through. tf.keras 2 had a public switch for this
    (experimental_aggregate_gradients=False); Keras 3 has none, hence the private method. If a
    Keras version sums elsewhere, tests/test_distribution.py fails: the replicas' weights would no
    longer match one device's.
    """
    if not hasattr(optimizer, "_all_reduce_sum_gradients"):
        raise RuntimeError("this Keras version no longer sums gradients in Optimizer._all_reduce_sum_gradients; "
                           "lstm_mnist/distribution.py's step_sums_the_gradients must follow it")
    optimizer._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)


# ---------------------------------------------------------------------------
# Where a worker that is not the chief writes
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def folder_of_a_worker(config, resume_dir: Path | None, log: Callable[[str], None]):
    """For a worker that is not the chief: (config, resume_dir) that point into a new temporary folder.

    A new run is made in that folder instead of under --log-dir; a resumed one continues from a
    copy of the run's config.json and checkpoints/ (read from resume_dir, never written). The
    folder is deleted on the way out, whatever the way (an error, a signal, the end).
    """
    folder = Path(tempfile.mkdtemp(prefix="lstm-mnist-worker-"))
    try:
        if resume_dir is None:
            config = dataclasses.replace(config, log_dir=str(folder))
        else:
            copy = folder / resume_dir.name
            try:
                copy.mkdir()
                shutil.copy2(resume_dir / "config.json", copy / "config.json")
                shutil.copytree(resume_dir / "checkpoints", copy / "checkpoints", symlinks=True)
            except OSError as error:
                raise OneLineError(f"--resume {resume_dir}: this worker cannot read the run's checkpoints "
                                   f"({plain_reason(error)}); every worker must see the run folder, e.g. on a "
                                   "shared file system", exit_code=2) from None
            resume_dir = copy
        log(f"not the chief: this worker's run folder is temporary, in {folder}, and is deleted when it ends")
        yield config, resume_dir
    finally:
        shutil.rmtree(folder, ignore_errors=True)
