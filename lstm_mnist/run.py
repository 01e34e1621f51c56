"""The run: its folder, its lock, its checkpoints, Ctrl-C, --resume and its final files.

train.py tells the story of a training run; this module is the machinery that
makes a long run safe to stop, resume and trust. train.py talks to it through
one object and five calls:

    with Run(config, ...) as run:                  # a new run folder, or a resumed one
        for epoch in run.epochs():                   # the epochs still to train
            for x, y in run.batches(epoch, data):    # the batches still to train, k at a time
                ...k training steps in one call...
                run.after_steps(per_step, gradients) # NaN guard, TensorBoard, progress bar,
                                                     # periodic checkpoint, Ctrl-C
            ...validation...
            run.end_of_epoch(...)                    # TensorBoard, the epoch line, a checkpoint, Ctrl-C
        ...the test set...
        run.finish(...)                              # model.keras, metrics.json, the last lines

What a run leaves behind:

    <log_dir>/<YYYYmmdd-HHMMSS>-<model>/    (or <log_dir>/<--name>/; <model>: default_run_name)
        .lock          held (flock) by the process working in the folder: see RunLock
        config.json    the resolved Config, and the fingerprint of the data it trained on
        checkpoints/   the two newest checkpoints and `checkpoint`, the index naming them
        events.out.*, train/, validation/, test/    TensorBoard (dashboard.py)
        model.keras    the trained model
        metrics.json   the final numbers; written last, so its presence means "finished"

What is guaranteed, and what backs it:

- Durable: config.json, each checkpoint's files and the index, model.keras and
  metrics.json are written under a temporary name, fsynced, renamed into place
  and their folder fsynced (durable.py). After a crash or a power cut each is
  its old self or its complete new self, and the index only ever names a
  checkpoint whose files were on the disk before the index was written.
- One process per folder: the lock is held for the whole run, new or resumed.
- A closed world: --resume refuses a folder holding a symbolic link or anything
  but plain files and folders, and an index naming anything but a ckpt-<step>
  inside checkpoints/; clean-ups delete only names this module generates.
- Resume never guesses: it continues from the newest checkpoint that loads,
  says so if that is not the newest one, and refuses, changing nothing, if
  none loads or the index is gone while checkpoint files are there.
- Signals are answered truthfully in every phase (see StopRequests).

Nothing here imports TensorFlow at import time: the CLI uses the checks below
to refuse a bad --resume before it spends seconds importing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import math
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from lstm_mnist import durable
from lstm_mnist.config import FEATURES, Config, flag
from lstm_mnist.errors import OneLineError, plain_reason

# config.json holds the Config's fields and, beside them, this key.
DATA_FINGERPRINT = "data_fingerprint"
# Settings about the machine a process runs on, not about the run (distribution.py): on resume
# they come from the command line, their defaults if not given, never from config.json, so a run
# started on eight GPUs resumes on a laptop as it is (a checkpoint restores under any strategy).
WHERE_IT_RUNS = {"strategy", "devices"}
# Settings that may differ on resume: they change where data is read from and where the steps
# run, not what is computed (and the data's fingerprint must still match).
MAY_CHANGE_ON_RESUME = {"data", *WHERE_IT_RUNS}


class RunError(OneLineError):
    """A run folder that cannot be used: a bad --resume, --name or --log-dir, or a folder in use or tampered with."""

    exit_code = 2


class CheckpointError(OneLineError):
    """A checkpoint could not be written, or none can be read back."""

    exit_code = 1


class TrainingStopped(OneLineError):
    """Training stopped early on purpose: a signal (exit 128 + its number) or a loss that became NaN (exit 1)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM before the run folder exists: nothing was written, so there is nothing to save."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number


def resume_command(run_dir: Path) -> str:
    """The command that continues `run_dir`, quoted so that it can be pasted into a shell as it is."""
    return f"lstm-mnist train --resume {shlex.quote(str(run_dir))}"


# ---------------------------------------------------------------------------
# The run, as train.py sees it
# ---------------------------------------------------------------------------


class Run:
    """One training run's folder, checkpoints, signals, TensorBoard and final files.

    model, optimizer: what is trained; train_means, validation_means: the
    running means of train.py (saved in every checkpoint, so a resumed epoch's
    means are exact and a run resumed after its last epoch still knows them);
    splits: the data (for TensorBoard's pictures); data_fingerprint: a hash of
    the data, kept in config.json so that a resume refuses different data;
    resume_dir: continue this run folder instead of creating one;
    stop: the StopRequests the CLI installed (one is installed if not given);
    steps_per_call: how many consecutive batches `batches` hands out at a time;
    chief: False in the workers of a multi-worker run that are not its chief: they take every
    step too, but keep their files in a temporary folder, deleted at the end (distribution.py).
    """

    def __init__(self, config: Config, *, model, optimizer, train_means, validation_means, splits,
                 steps_per_epoch: int, data_fingerprint: str,
                 resume_dir: Path | None = None, stop: StopRequests | None = None,
                 log: Callable[[str], None] = print, started: float | None = None, steps_per_call: int = 1,
                 chief: bool = True):
        self.config, self.model, self.optimizer = config, model, optimizer
        self.train_means, self.validation_means, self.splits = train_means, validation_means, splits
        self.steps_per_epoch, self.data_fingerprint = steps_per_epoch, data_fingerprint
        self.steps_per_call, self.chief = steps_per_call, chief
        self.group_batch_size = 0  # the batch size of the group of steps batches() handed out last
        self.last_gradients = None  # the gradients of the last step taken, for TensorBoard's histograms
        self.resume_dir, self.stop, self.log = resume_dir, stop, log
        self.started = started or time.time()
        self.run_dir: Path | None = None
        self.step = 0  # steps taken so far, over all epochs: the position of the run
        self.epoch, self.batch = 1, 0  # the epoch being trained, and its batches done
        self.epoch_started = time.time()
        self.dashboard = None  # TensorBoard; None with --no-tensorboard
        self.progress = None  # Keras's progress bar, when stdout is a terminal
        self.exits = contextlib.ExitStack()

    def __enter__(self) -> Run:
        try:
            if self.stop is None:
                self.stop = self.exits.enter_context(StopRequests())
            # From here on a signal is a request to stop at the next checkpoint, never an exception.
            self.stop.phase = RUNNING
            if not self.chief:  # the run folder is the chief's: this worker writes into a temporary one
                from lstm_mnist.distribution import folder_of_a_worker

                self.config, self.resume_dir = self.exits.enter_context(
                    folder_of_a_worker(self.config, self.resume_dir, self.log))
            if self.resume_dir is None:
                self.start()
            else:
                self.resume()
            self.epoch = min(self.step // self.steps_per_epoch + 1, self.config.epochs)
            self.stop_if_requested()  # a signal during the set-up: stop at step 0, or where the resume began
        except BaseException:
            self.exits.close()
            raise
        return self

    def __exit__(self, *exc_info):
        # Closes TensorBoard (quietly if an error is on its way), then releases the lock.
        return self.exits.__exit__(*exc_info)

    # --- The five calls of train.py -------------------------------------------------
    def epochs(self):
        """The epochs still to train, from the one holding the current step; then the run is finishing."""
        yield from range(self.step // self.steps_per_epoch + 1, self.config.epochs + 1)
        # From here a signal is answered "finishing" (end_of_epoch already said so after the last
        # epoch); one that came before is answered as it was promised: checkpoint, stop.
        self.stop.phase = FINISHING
        self.stop_if_requested()

    def batches(self, epoch: int, data):
        """The batches of `epoch` still to train, a group of consecutive ones at a time.

        data: the epoch's training data in training order, (x float32 [N, T, F], y int32 [N]).
        Yields (x float32 [k, B, T, F], y int32 [k, B]): all the epoch's batches, or after a
        resume the rest of it. A group holds up to steps_per_call batches and ends early
        where the run must act between two steps (group_end); the smaller last batch of an
        epoch is a group of its own. A fresh epoch starts the train means at zero; a resumed
        one keeps the means restored from the checkpoint, so the epoch's numbers come out
        exactly as if it had never stopped.
        """
        x, y = data
        batch_size, first = self.config.batch_size, (epoch - 1) * self.steps_per_epoch
        done = self.step - first  # 0 unless resumed inside this epoch
        if done == 0:
            self.train_means.reset()
        self.epoch, self.batch, self.epoch_started = epoch, done, time.time()
        if sys.stdout.isatty():
            import keras

            self.progress = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=["loss", "accuracy"])
            self.progress.update(done)
        full_batches = len(y) // batch_size
        while done < self.steps_per_epoch:
            if done < full_batches:
                end = min(self.group_end(first + done) - first, full_batches)
                group = slice(done * batch_size, end * batch_size)  # whole batches: one reshape, no copy
                self.group_batch_size = batch_size
                group_x = x[group].reshape(end - done, batch_size, *x.shape[1:])  # (k, B, T, F)
                group_y = y[group].reshape(end - done, batch_size)  # (k, B)
            else:  # the last batch, smaller than the others
                end, self.group_batch_size = done + 1, len(y) - done * batch_size
                group_x, group_y = x[None, done * batch_size:], y[None, done * batch_size:]  # (1, b, T, F), (1, b)
            if self.dashboard:
                self.dashboard.before_step(self.step)
            yield group_x, group_y
            done = end

    def group_end(self, step: int) -> int:
        """The step at which a group of steps starting after `step` ends (steps are counted over the whole run).

        At the latest after steps_per_call steps (at a multiple of it, so that TensorBoard's
        every-50-steps points fall on a group's end), and at every step where the run must act
        between two steps: a periodic checkpoint, and the first and last profiled step. A
        stop request is answered at the end of the group, i.e. at most steps_per_call steps later.
        """
        ends = [(step // self.steps_per_call + 1) * self.steps_per_call]
        every = self.config.checkpoint_every_steps
        if every:
            ends.append((step // every + 1) * every)
        if self.dashboard and self.dashboard.profile:
            from lstm_mnist.dashboard import PROFILE_STEPS

            ends += [profiled for profiled in PROFILE_STEPS if profiled > step]
        return min(ends)

    def after_steps(self, per_step, gradients=None) -> None:
        """After each group of steps: the NaN guard, TensorBoard, the progress bar, checkpoints, stop requests.

        per_step: float32 [k, 4], each step's loss, accuracy, gradient norm and learning rate.
        gradients: the group's last step's, one per weight; end_of_epoch histograms the epoch's last.
        """
        self.last_gradients = gradients
        for loss, accuracy, gradient_norm, learning_rate in per_step.numpy().tolist():  # the one wait per group
            self.step, self.batch = self.step + 1, self.batch + 1
            if not (math.isfinite(loss) and math.isfinite(gradient_norm)):
                # The weights may now hold inf/NaN; the checkpoints on disk do not.
                what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", gradient_norm)
                last = self.checkpoints.latest_step
                kept = f"the last checkpoint (step {last}) is kept in {self.run_dir}" if last is not None \
                    else f"no checkpoint had been written yet in {self.run_dir}"
                raise TrainingStopped(f"the {what} became {value} at step {self.step} (epoch {self.epoch}); "
                                      f"training stopped and {kept}; try a lower --learning-rate or --clip-norm 1 "
                                      "in a new run", exit_code=1)
            if self.dashboard:
                self.dashboard.after_step(self.step, self.group_batch_size, loss, accuracy,
                                          lambda rate=learning_rate: rate, gradient_norm,
                                          ends_epoch=self.batch == self.steps_per_epoch)
        if self.progress:
            self.progress.update(self.batch, values=list(self.train_means.result().items()))
        # An epoch's last step is checkpointed by end_of_epoch, after the validation, so that
        # a run resumed at an epoch boundary never skips that epoch's validation and summaries.
        if self.batch < self.steps_per_epoch:
            self.stop_if_requested()
            if self.config.checkpoint_every_steps and self.step % self.config.checkpoint_every_steps == 0:
                self.save()

    def end_of_epoch(self, epoch: int, train: dict, validation: dict | None, val_predictions) -> None:
        """TensorBoard's epoch summaries, a checkpoint, the epoch's line; then stop if asked to.

        validation: None with --val-size 0, and then no validation number is
        reported anywhere; val_predictions: int [N], the digit predicted for
        each validation image.
        """
        if self.dashboard:
            self.dashboard.end_of_epoch(epoch, self.step, train, validation, val_predictions, self.last_gradients)
            self.dashboard.flush()  # events up to this step are written before the checkpoint says so
        self.save()
        if epoch == self.config.epochs:
            # Before the line is printed, so that a signal after it is always answered "finishing".
            self.stop.phase = FINISHING
        numbers = [f"train_loss {train['loss']:.4f}", f"train_accuracy {train['accuracy']:.4f}"]
        if validation is not None:
            numbers += [f"val_loss {validation['loss']:.4f}", f"val_accuracy {validation['accuracy']:.4f}"]
        self.log(f"epoch {epoch}/{self.config.epochs}  {'  '.join(numbers)}  "
                 f"lr {float(self.optimizer.learning_rate):.2e}  {time.time() - self.epoch_started:.1f}s")
        self.stop_if_requested()

    def finish(self, train: dict, validation: dict | None, test: dict) -> dict:
        """Write TensorBoard's final scalars, model.keras and metrics.json (last); return the metrics."""
        if self.dashboard:
            self.dashboard.end_of_run(self.step, test)
        model_file, metrics_file = self.run_dir / "model.keras", self.run_dir / "metrics.json"
        self.write_final_file(model_file, lambda: save_model_durably(self.model, model_file))
        metrics = {
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "test_examples": len(self.splits.x_test),
            # null, not 0, when nothing was validated (--val-size 0)
            "val_loss": validation["loss"] if validation else None,
            "val_accuracy": validation["accuracy"] if validation else None,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "epochs": self.config.epochs,
            "steps": self.step,
            "seconds": round(time.time() - self.started, 1),
            # of those, spent writing summaries
            "tensorboard_seconds": round(self.dashboard.seconds_writing if self.dashboard else 0.0, 1),
        }
        self.write_final_file(metrics_file, lambda: durable.write_json(metrics_file, metrics))
        if not self.chief:  # its folder is about to be deleted: nothing of it to point to
            self.log(f"test accuracy {test['accuracy']:.2%}; this worker is done, and the chief keeps the run's files")
            return metrics
        which = f"the first {len(self.splits.x_test):,}" if self.config.test_examples \
            else f"all {len(self.splits.x_test):,}"
        self.log(f"test accuracy {test['accuracy']:.2%} on {which} test images "
                 f"(test loss {test['loss']:.4f}), {metrics['seconds']:.0f}s in all")
        self.log(f"saved: {model_file}, {metrics_file}")
        self.log(f"look closer: lstm-mnist evaluate {shlex.quote(str(self.run_dir))}")
        self.log(f"view the curves: tensorboard --logdir {shlex.quote(str(self.run_dir.parent))}")
        return metrics

    # --- Behind the calls -------------------------------------------------------------
    def start(self) -> None:
        """A new run: create its folder, lock it, write config.json, open TensorBoard.

        Until the first checkpoint, a run is worth nothing and its folder would
        only block its --name: if any of this fails, the folder is removed.
        """
        config = self.config
        self.run_dir = create_run_dir(config.log_dir, config.name, default_name=default_run_name(config))
        self.stop.after_quitting = f"the run was not set up yet: delete {self.run_dir} and start again"
        try:
            self.exits.enter_context(RunLock(self.run_dir))
            durable.write_json(self.run_dir / "config.json",
                               {**config.to_dict(), DATA_FINGERPRINT: self.data_fingerprint})
            self.checkpoints = self.make_checkpoints()
            self.checkpoints.create()  # an empty index: "no checkpoint yet", so a resume starts at step 0
            self.stop.after_quitting = "no checkpoint had been saved yet, so a resume starts again from step 0"
            self.open_dashboard()
            if self.dashboard:
                lines = []
                self.model.summary(print_fn=lambda text, **_: lines.append(text))
                self.dashboard.start_of_run("\n".join(lines))  # written once, at step 0; a resume keeps them
                self.dashboard.flush()
        except Exception as error:
            self.exits.close()  # closes TensorBoard's files and the lock before the folder goes
            shutil.rmtree(self.run_dir, ignore_errors=True)
            reason = str(error).split(";")[0] if isinstance(error, OneLineError) else plain_reason(error)
            raise RunError(f"could not start the run in {self.run_dir} ({reason}); the folder was removed, "
                           "so nothing was left behind", exit_code=1) from None
        self.log(f"run: {self.run_dir}")

    def resume(self) -> None:
        """Lock the folder, check it, restore the newest checkpoint that loads, rewind TensorBoard."""
        self.run_dir = self.resume_dir
        self.exits.enter_context(RunLock(self.run_dir))
        # Checked again under the lock: the folder cannot change under us from now on.
        saved, fingerprint = load_run_config(self.run_dir)
        if dataclasses.replace(saved, **{name: getattr(self.config, name) for name in MAY_CHANGE_ON_RESUME}) \
                != self.config:
            raise RunError(f"--resume {self.run_dir}: the settings given differ from the run's config.json; "
                           "drop them to continue the run as it was")
        if fingerprint is not None and fingerprint != self.data_fingerprint:
            given = f"--data {self.config.data}" if self.config.data else "the data found"
            raise RunError(f"--resume {self.run_dir}: {given} is not the data this run was trained on "
                           f"(its fingerprint differs from the one in config.json); pass the run's own data "
                           "with --data, or start a new run")
        self.checkpoints = self.make_checkpoints()
        self.step = self.checkpoints.restore_newest(self.log)  # refuses, changing nothing, if none loads
        self.stop.after_quitting = "the last complete checkpoint is kept"
        # Only now that a checkpoint is restored is anything in the folder changed.
        from lstm_mnist.dashboard import trim_events_after  # TensorBoard's modules load only when needed

        remove_stale_temporaries(self.run_dir)
        removed = trim_events_after(self.run_dir, self.step, self.log)
        total = self.config.epochs * self.steps_per_epoch
        where = f"epoch {self.step // self.steps_per_epoch + 1}" if self.step < total \
            else f"all {self.config.epochs} epochs done"
        self.log(f"resumed: {self.run_dir} at step {self.step} ({where}); "
                 f"removed {removed} TensorBoard events written after that checkpoint")
        self.open_dashboard()

    def make_checkpoints(self) -> Checkpoints:
        # A Keras seed generator's state is not a weight, and tf.train.Checkpoint
        # does not find it through the model, so it is listed by hand; without it
        # a resumed run would draw dropout masks from the start of the sequence again.
        rng_states = [v for v in self.model.non_trainable_variables if "seed_generator_state" in v.path]
        # Adam creates its moment variables lazily, on the first step; build them now
        # so that a restore has somewhere to put the saved values.
        self.optimizer.build(self.model.trainable_variables)
        return Checkpoints(self.run_dir, model=self.model, optimizer=self.optimizer, rng_states=rng_states,
                           train_metrics=self.train_means.variables,
                           validation_metrics=self.validation_means.variables)

    def open_dashboard(self) -> None:
        if self.config.tensorboard:
            from lstm_mnist.dashboard import Dashboard  # not imported at all with --no-tensorboard

            self.dashboard = self.exits.enter_context(
                Dashboard(self.run_dir, self.config, self.model, self.splits, self.log))

    def save(self) -> None:
        self.checkpoints.save(self.step)
        self.stop.after_quitting = "the last complete checkpoint is kept"

    def stop_if_requested(self) -> None:
        """If a signal asked the run to stop: make sure a checkpoint holds this step, then stop."""
        if self.stop.requested:
            self.save()
            name = SIGNAL_NAMES[self.stop.signal_number].split()[0]
            resume = f"Resume with: {resume_command(self.run_dir)}" if self.chief else \
                "The chief's run folder holds the run: resume it on every worker with --resume RUN_DIR"
            raise TrainingStopped(f"stopped by {name} at step {self.step} (epoch {self.epoch}); checkpoint saved. "
                                  f"{resume}", exit_code=128 + self.stop.signal_number)

    def write_final_file(self, path: Path, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as error:
            raise RunError(f"could not write {path} ({plain_reason(error)}); the run and its checkpoints are "
                           f"intact: free some space, then finish it with: {resume_command(self.run_dir)}",
                           exit_code=1) from None


def save_model_durably(model, path: Path) -> None:
    """model.save, made atomic and durable: a fresh temporary name, fsync, rename, folder fsync.

    Keras insists on a name ending in .keras, so durable.write_with cannot be
    used as it is; the temporary file is created first with O_EXCL|O_NOFOLLOW,
    so Keras only ever writes into a new plain file of ours.
    """
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    durable.open_fresh(temporary).close()
    try:
        model.save(temporary)
        durable.sync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    durable.sync_folder(path.parent)


# Temporary files of a process that died while writing them: .config.json.<pid>.tmp, .model.<pid>.tmp.keras, ...
STALE_TEMPORARY = re.compile(r"\.(config\.json|metrics\.json|model)\.\d+\.tmp(\.keras)?")


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary files a killed run left; under the lock, no living process is writing them."""
    for entry in os.scandir(run_dir):
        if STALE_TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)


# ---------------------------------------------------------------------------
# The run folder: created fresh, or checked before it is resumed
# ---------------------------------------------------------------------------


def refuse_unusable_log_dir(log_dir: str, name: str) -> None:
    """Raise RunError now if create_run_dir would refuse (--log-dir not a folder or not writable, --name taken).

    Called before TensorFlow is imported, so that a mistyped path costs no data loading or model building.
    Creates nothing: the folders are made by create_run_dir once the run starts, which checks again.
    """
    base = Path(log_dir).expanduser()
    if name and os.path.lexists(base / name):
        raise RunError(f"--name {name}: {base / name} already exists; {name_taken_advice(base / name)}")
    existing = base
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent  # the nearest part of the path that is there: mkdir starts from it
    if os.path.lexists(existing) and not existing.is_dir():
        where = "it is" if existing == base else f"{existing} is"
        raise RunError(f"--log-dir {log_dir}: {where} not a folder, so no run folder can be made there; "
                       "pass a folder with --log-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"--log-dir {log_dir}: cannot write a run folder there ({os.strerror(errno.EACCES)}); "
                       "pass a writable folder with --log-dir")


def create_run_dir(log_dir: str, name: str, default_name: str, now: datetime.datetime | None = None) -> Path:
    """Create and return a new, empty run folder under `log_dir`.

    name: the user's --name, used as the folder name exactly; if that folder
        exists the run is refused, so nothing of the earlier run is touched.
    default_name: used when name is empty, after a timestamp. `mkdir`
        without exist_ok is atomic, so if two runs start in the same second,
        one gets the folder and the other the next suffix (-2, -3, ...):
        two runs never share a folder.
    """
    base = Path(log_dir).expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
        if name:
            try:
                (base / name).mkdir()
                durable.sync_folder(base)
                return base / name
            except FileExistsError:
                raise RunError(f"--name {name}: {base / name} already exists; {name_taken_advice(base / name)}") \
                    from None
        stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
        for attempt in range(1, 1000):
            candidate = base / (f"{stamp}-{default_name}" if attempt == 1 else f"{stamp}-{default_name}-{attempt}")
            try:
                candidate.mkdir()
                durable.sync_folder(base)
                return candidate
            except FileExistsError:
                continue
    except OSError as error:
        raise RunError(f"--log-dir {log_dir}: cannot write a run folder there ({plain_reason(error)}); "
                       "pass a writable folder with --log-dir") from None
    raise RunError(f"--log-dir {log_dir}: too many runs named {stamp}-{default_name}; pass a --name")


def default_run_name(config: Config) -> str:
    """The part of a run folder's name after the timestamp: the model, as its flags would say it.

    lstm128 (the default), lstm128x2-bi-do0.2 (2 layers, bidirectional, dropout 0.2),
    scratch128-peep-proj64, gru64-in128 (a Dense input projection of 128),
    lstm128-px7-perm (7 pixels per step, permuted): enough to tell runs apart in
    TensorBoard's run list without opening their config.
    """
    parts = [f"{config.cell}{config.units}" + (f"x{config.layers}" if config.layers > 1 else "")]
    if config.bidirectional:
        parts.append("bi")
    if config.dropout:
        parts.append(f"do{config.dropout:g}")
    if config.peepholes:
        parts.append("peep")
    if config.recurrent_projection:
        parts.append(f"proj{config.recurrent_projection}")
    if config.input_projection:
        parts.append(f"in{config.input_projection}")
    if config.pixels_per_step != FEATURES:
        parts.append(f"px{config.pixels_per_step}")
    if config.permute_pixels:
        parts.append("perm")
    return "-".join(parts)


def name_taken_advice(folder: Path) -> str:
    """What to do when --name names an existing folder: --resume only if --resume would then work."""
    if (folder / "metrics.json").exists():
        return "that run has finished; choose another --name"
    if (folder / "config.json").exists():
        holder = lock_holder(folder)
        if holder is not None:
            return f"that run is still training (process {holder}); choose another --name"
        refusal = resume_refusal(folder)
        if refusal is not None:
            return f"choose another --name (that run cannot be resumed: {refusal.split(': ', 1)[-1]})"
        return f"choose another --name, or continue that run with --resume {shlex.quote(str(folder))}"
    return "choose another --name"


def resume_refusal(run_dir: Path) -> str | None:
    """The one line `--resume run_dir` would be refused with before training, or None if it would continue.

    Only reads (the same checks as the CLI makes before importing TensorFlow,
    except the lock: see lock_holder), so advice never sends anyone to a
    command that fails.
    """
    try:
        load_run_config(run_dir)
        read_index(run_dir)
    except OneLineError as error:
        return str(error)
    return None


def load_run_config(run_dir: Path) -> tuple[Config, str | None]:
    """The Config a run was started with and its data fingerprint; RunError if `run_dir` cannot be resumed.

    Only reads. Checks, in order: the folder exists; it is a closed world (no
    symbolic links, nothing but plain files and folders); it has a config.json;
    the run has not finished; config.json holds exactly the Config's settings,
    each of the right type and in range.
    """
    if not run_dir.is_dir():
        raise RunError(f"--resume {run_dir}: no such folder; pass a run folder such as logs/20261123-104151-lstm128")
    refuse_links_and_special_files(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.exists():
        raise RunError(f"--resume {run_dir}: not a run folder (it has no config.json)")
    if (run_dir / "metrics.json").exists():
        raise RunError(f"--resume {run_dir}: this run already finished (metrics.json exists); start a new run, "
                       f"or look at this one with: lstm-mnist evaluate {shlex.quote(str(run_dir))}")
    try:
        saved = json.loads(config_file.read_bytes())
    except OSError as error:
        raise RunError(f"--resume {run_dir}: cannot read its config.json ({plain_reason(error)})") from None
    except ValueError as error:  # not JSON, or not UTF-8
        raise RunError(f"--resume {run_dir}: config.json is not a valid lstm_mnist config "
                       f"(not JSON: {str(error).splitlines()[0]})") from None
    try:
        if not isinstance(saved, dict):
            raise ValueError(f"it holds a {type(saved).__name__}, not a JSON object")
        fingerprint = saved.pop(DATA_FINGERPRINT, None)
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError(f"{DATA_FINGERPRINT} must be a string")
        known = {field.name for field in dataclasses.fields(Config)}
        if set(saved) - known:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(set(saved) - known))}")
        if known - set(saved) - WHERE_IT_RUNS:  # those take their defaults: they were added later
            raise ValueError(f"missing setting(s) {', '.join(sorted(known - set(saved) - WHERE_IT_RUNS))}")
        config = Config(**saved)
        config.validate()
    except ValueError as error:
        raise RunError(f"--resume {run_dir}: config.json is not a valid lstm_mnist config ({error})") from None
    return config, fingerprint


def merge_resume_flags(saved: Config, given: dict) -> Config:
    """Apply the flags given alongside --resume, refusing any that contradict the run.

    The settings of WHERE_IT_RUNS are the command line's (their defaults if not given), not the run's.
    """
    conflicts = [f"--{flag(name)} {value} (the run used {getattr(saved, name)})"
                 for name, value in given.items()
                 if name not in MAY_CHANGE_ON_RESUME and value != getattr(saved, name)]
    if conflicts:
        raise RunError(f"--resume: {'; '.join(conflicts)}; drop these flags to continue the run as it was, "
                       "or start a new run")
    here = {name: given.get(name, Config.__dataclass_fields__[name].default) for name in WHERE_IT_RUNS}
    return dataclasses.replace(saved, **{**here, **{k: v for k, v in given.items() if k in MAY_CHANGE_ON_RESUME}})


def refuse_links_and_special_files(run_dir: Path) -> None:
    """RunError if anything inside `run_dir` is a symbolic link, or neither a plain file nor a folder.

    A resumed run writes, rewrites and deletes files in its folder; a link
    planted there (as model.keras, a temporary name, an event file, checkpoints/)
    would send those writes and deletions outside it, and a FIFO named
    config.json would hang the read. The walk itself never follows a link.
    """
    folders = [run_dir]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    path = Path(entry.path)
                    if entry.is_symlink():
                        raise RunError(f"--resume {run_dir}: {path} is a symbolic link; a run folder holds only "
                                       "its own files, so that nothing outside it is written or deleted: "
                                       "remove the link (or copy the run without it)")
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(path)
                    elif not entry.is_file(follow_symlinks=False):
                        raise RunError(f"--resume {run_dir}: {path} is neither a file nor a folder; "
                                       "remove it and resume again")
        except OSError as error:
            raise RunError(f"--resume {run_dir}: cannot read {folder} ({plain_reason(error)}); "
                           "check its permissions") from None


# ---------------------------------------------------------------------------
# One process per run folder
# ---------------------------------------------------------------------------


class RunLock:
    """An exclusive lock on a run folder, held from __enter__ to __exit__.

        with RunLock(run_dir):
            ...   # nothing else that takes the lock works in run_dir meanwhile

    `fcntl.flock` on <run_dir>/.lock: the kernel releases it when its process
    ends, however it ends (SIGKILL, a crash, a power cut), so a lock left by a
    dead process never blocks anyone. The file holds the holder's PID, only to
    name it in the refusal. The file is opened with O_NOFOLLOW: a symbolic
    link planted there is refused, never followed.
    """

    FILE_NAME = ".lock"

    def __init__(self, run_dir: Path):
        self.run_dir, self.path, self.fd = run_dir, run_dir / self.FILE_NAME, None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as error:
            reason = "it is a symbolic link" if error.errno == errno.ELOOP else plain_reason(error)
            raise RunError(f"{self.run_dir}: cannot open its lock file {self.path} ({reason})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = re.sub(r"\D", "", os.pread(fd, 32, 0).decode(errors="replace")) or "unknown"
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunError(f"{self.run_dir} is in use by process {holder}, which is still working in it; "
                               "wait for it to end (or stop it), then try again", exit_code=1) from None
            raise RunError(f"{self.run_dir}: cannot lock {self.path} ({plain_reason(error)})") from None
        with contextlib.suppress(OSError):  # naming the holder is a courtesy; a full disk must not stop the run
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc_info):
        os.close(self.fd)  # releases the lock
        self.fd = None
        return False


def lock_holder(run_dir: Path) -> str | None:
    """The PID (as text, or "unknown") of the process holding `run_dir`'s RunLock; None if no process holds it.

    Only reads: the lock file is opened read-only, never created, and a
    shared lock is tried and dropped at once (flock works on a read-only
    file). A folder without .lock was never locked, or is not a run. (The
    shared lock lasts microseconds; a --resume that tried to lock the folder
    in that instant would be refused once, saying the folder is in use.)
    """
    try:
        fd = os.open(run_dir / RunLock.FILE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        return re.sub(r"\D", "", os.pread(fd, 32, 0).decode(errors="replace")) or "unknown"
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Signals: Ctrl-C and `kill`, answered truthfully in every phase
# ---------------------------------------------------------------------------

SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}
STARTING, RUNNING, FINISHING = "starting", "running", "finishing"


class StopRequests:
    """SIGINT (Ctrl-C) and SIGTERM (`kill`, a job scheduler's time limit), as a context manager.

    What the first signal does depends on the phase the run is in:

        starting   no run folder yet (importing TensorFlow, loading the data,
                   building the model): it raises Interrupted, and the CLI says
                   "interrupted before training started; nothing was written"
        running    it only sets `requested`; the run stops at the next step
                   boundary, once a checkpoint holds that step
        finishing  training is done (test evaluation, final files): the run says
                   it is finishing, and finishes

    A second signal quits at once, saying what is left (`after_quitting`).
    That is safe: a checkpoint only counts once the index names it, and the
    index is only rewritten after the checkpoint's files are on the disk.
    """

    def __init__(self):
        self.phase = STARTING
        self.signal_number: int | None = None
        self.phase_when_signalled: str | None = None
        self.after_quitting = "nothing was written"
        self._previous = {}

    @property
    def requested(self) -> bool:
        """Whether a signal asked the run to stop (one that came while finishing asks nothing)."""
        return self.signal_number is not None and self.phase_when_signalled == RUNNING

    def _handle(self, signal_number, frame):
        # Only os.write here: print() is not safe to re-enter from a signal handler.
        if self.signal_number is not None:
            os.write(2, f"\nsecond signal: quitting now; {self.after_quitting}\n".encode())
            os._exit(128 + signal_number)
        self.signal_number, self.phase_when_signalled = signal_number, self.phase
        name = SIGNAL_NAMES[signal_number]
        if self.phase == STARTING:
            raise Interrupted(signal_number)
        if self.phase == RUNNING:
            os.write(2, f"\n{name}: stopping as soon as a checkpoint is saved "
                        "(send it again to quit at once)\n".encode())
        else:
            os.write(2, f"\n{name}: finishing: training is done, only the test evaluation and the final files "
                        "remain (send it again to quit at once; the run can then be resumed)\n".encode())

    def __enter__(self) -> StopRequests:
        # Signal handlers can only be installed from the main thread; elsewhere
        # (e.g. a notebook's worker thread) the default behaviour is kept.
        if threading.current_thread() is threading.main_thread():
            for number in SIGNAL_NAMES:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False


# ---------------------------------------------------------------------------
# Checkpoints: everything needed to continue a run exactly where it stopped
# ---------------------------------------------------------------------------

# The only names the checkpoints/ folder may hold, and the only ones ever deleted:
# one checkpoint's two files, the leftovers of an interrupted TensorFlow write
# (ckpt-<step>_temp/), the index and the index's own temporary file.
CHECKPOINT_NAME = re.compile(r"ckpt-(\d+)")
CHECKPOINT_FILE = re.compile(r"ckpt-(\d+)(\.index|\.data-\d{5}-of-\d{5}|_temp.*)")
INDEX_NAME = "checkpoint"
INDEX_TEMPORARY = re.compile(r"\.checkpoint\.\d+\.tmp")
KEPT = 2  # so a checkpoint that turns out unreadable still has a predecessor


class Checkpoints:
    """The training state of one run, in <run_dir>/checkpoints.

    A checkpoint holds the weights, Adam's state (its moment estimates and its
    step counter, which is also the position in the learning-rate schedule),
    the dropout generators' state and the running means of the epoch in
    progress. Nothing else is needed: the epoch and the batch within it follow
    from the step, and each epoch's order and shifts from (seed, epoch) (data.training_data),
    so a resumed run replays exactly the batches the first run would have seen.

    Why not tf.train.CheckpointManager: it never fsyncs, and it deletes
    whatever paths its index names, even outside the folder. Why not Keras's
    BackupAndRestore: it is a callback of model.fit's loop, and this package
    writes its loop out by hand. `tf.train.Checkpoint` is the library's tool
    underneath both; this class adds the discipline.
    """

    def __init__(self, run_dir: Path, **objects):
        import tensorflow as tf

        self.run_dir, self.folder = run_dir, run_dir / "checkpoints"
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.kept: list[int] = []  # the steps the index names, oldest first

    @property
    def latest_step(self) -> int | None:
        return self.kept[-1] if self.kept else None

    def create(self) -> None:
        """The folder and an index naming no checkpoint: from now on a missing index means a lost one."""
        self.folder.mkdir()
        durable.sync_folder(self.run_dir)
        durable.write_bytes(self.folder / INDEX_NAME, index_text([]))

    def save(self, step: int) -> None:
        """Write the checkpoint of `step`: its files, synced; then the index naming it; then drop the oldest.

        Raises CheckpointError (one line) if the disk refuses; the partial
        files are removed and the previous checkpoint stays the index's newest.
        """
        import tensorflow as tf

        if step in self.kept:
            return  # the state at a step is the same however often it is saved
        kept = (self.kept + [step])[-KEPT:]
        try:
            prefix = self.folder / f"ckpt-{step}"
            self.checkpoint.write(str(prefix))  # ckpt-<step>.index and ckpt-<step>.data-00000-of-00001
            for path in [prefix.with_name(prefix.name + ".index"), *self.folder.glob(f"ckpt-{step}.data-*")]:
                durable.sync_file(path)
            durable.sync_folder(self.folder)
            # The commit point: until this rename, the previous checkpoint is the newest.
            durable.write_bytes(self.folder / INDEX_NAME, index_text(kept))
        except (tf.errors.OpError, OSError) as error:
            # Remove the half-written files, which also gives back the space a full disk needs.
            self.remove_checkpoints(lambda other: other == step)
            last = self.latest_step
            if last is not None:
                advice = (f"the last good checkpoint (step {last}) is intact. "
                          f"Free some disk space, then resume with: {resume_command(self.run_dir)}")
            else:
                advice = (f"no checkpoint was saved yet. Free some disk space, then resume (from step 0) with: "
                          f"{resume_command(self.run_dir)}")
            raise CheckpointError(f"could not write a checkpoint at step {step} in {self.folder} "
                                  f"({plain_reason(error)}); {advice}") from None
        self.kept = kept
        with contextlib.suppress(OSError):  # a clean-up that fails costs only disk space
            self.remove_checkpoints(lambda other: other not in kept)

    def remove_checkpoints(self, which: Callable[[int], bool]) -> None:
        """Delete the files of every checkpoint whose step `which` selects; only names this class generates."""
        removed = False
        for entry in os.scandir(self.folder):
            match = CHECKPOINT_FILE.fullmatch(entry.name)
            if match and which(int(match[1])):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                removed = True
            elif INDEX_TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)  # left by a process killed while it wrote the index
        if removed:
            durable.sync_folder(self.folder)

    def restore_newest(self, log: Callable[[str], None]) -> int:
        """Load the newest checkpoint that loads; return its step.

        If the newest is damaged, says so in one line and uses the older one.
        An index naming no checkpoint means the run stopped before its first
        one: the state at step 0 follows from the config and the seed, so the
        run starts again from there. Raises CheckpointError, having changed
        nothing on disk, if none loads, if the index is missing or cannot be
        read, or if it names anything but a checkpoint of this folder.
        """
        import tensorflow as tf

        steps = read_index(self.run_dir)
        if not steps:
            log("resume: the run had not saved a checkpoint yet; starting again from step 0")
            return 0
        failures = []
        for step in reversed(steps):
            try:
                self.checkpoint.read(str(self.folder / f"ckpt-{step}")).assert_existing_objects_matched()
            except (MemoryError, tf.errors.ResourceExhaustedError):
                raise
            except Exception as error:  # a damaged file fails anywhere in TF's reader: IndexError, DataLossError, ...
                failures.append(f"ckpt-{step} ({short(plain_reason(error))})")
                continue
            self.kept = [other for other in steps if other <= step][-KEPT:]
            if failures:
                log(f"resume: the newest checkpoint does not load: {'; '.join(failures)}; "
                    f"using the one before it, ckpt-{step}")
                # The index names the one restored as the newest again, so a crash before the next
                # save does not try the damaged one first (its files are replaced or deleted then).
                durable.write_bytes(self.folder / INDEX_NAME, index_text(self.kept))
            return step
        raise CheckpointError(f"--resume {self.run_dir}: no checkpoint in {self.folder} loads: {'; '.join(failures)}; "
                              "nothing was changed. The run cannot be continued; start a new one")


def read_index(run_dir: Path) -> list[int]:
    """The steps the index of `run_dir` names, oldest first; CheckpointError if it cannot be trusted.

    Only reads, and needs no TensorFlow: the CLI calls it before importing it.
    """
    folder = run_dir / "checkpoints"
    index = folder / INDEX_NAME
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        raise CheckpointError(f"--resume {run_dir}: it has no checkpoints/ folder (it was stopped while "
                              "being set up, or the folder was deleted); nothing to continue from: "
                              "start a new run") from None
    except OSError as error:
        raise CheckpointError(f"--resume {run_dir}: cannot read {folder} ({plain_reason(error)}); "
                              "check its permissions") from None
    if INDEX_NAME not in names:
        found = sorted({int(m[1]) for m in map(CHECKPOINT_FILE.fullmatch, names) if m})
        if not found:
            raise CheckpointError(f"--resume {run_dir}: its index {index} is missing and it holds no "
                                  "checkpoint; nothing to continue from: start a new run")
        newest = f"ckpt-{found[-1]}"
        raise CheckpointError(
            f"--resume {run_dir}: its index {index} is missing, though checkpoint files are there "
            f"({', '.join(f'ckpt-{step}' for step in found)}); resume will not guess which one is complete. "
            f"If you trust {newest}, write the line model_checkpoint_path: \"{newest}\" into that file "
            "and resume again")
    try:
        text = index.read_bytes().decode()
        return parse_index(text)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"--resume {run_dir}: cannot use the index {index} "
                              f"({plain_reason(error) if isinstance(error, OSError) else error}); "
                              "nothing was changed") from None


def index_text(steps: list[int]) -> bytes:
    """The index in TensorFlow's own text format (tf.train.latest_checkpoint reads it), newest last.

    Paths are relative to checkpoints/, as CheckpointManager writes them. No
    steps: an empty index, which says "no checkpoint yet".
    """
    if not steps:
        return b""
    lines = [f'model_checkpoint_path: "ckpt-{steps[-1]}"']
    lines += [f'all_model_checkpoint_paths: "ckpt-{step}"' for step in steps]
    return ("\n".join(lines) + "\n").encode()


def parse_index(text: str) -> list[int]:
    """The steps named by an index in TensorFlow's text format, oldest first; ValueError if it is anything else.

    Only a bare ckpt-<step> is accepted: an absolute path, a `..` or another
    folder would make a resume read, and its clean-up delete, files outside
    the run folder.
    """
    newest, listed = None, []
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if not key or key in ("all_model_checkpoint_timestamps", "last_preserved_timestamp"):
            continue  # blank lines, and the timestamps CheckpointManager adds
        if key not in ("model_checkpoint_path", "all_model_checkpoint_paths"):
            raise ValueError(f"unexpected line {short(line)!r}")
        name = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
        match = CHECKPOINT_NAME.fullmatch(name)
        if not match:
            raise ValueError(f"it names {short(name)!r}, which is not a checkpoint inside checkpoints/; "
                             "refusing to read or delete anything outside the run folder")
        if key == "model_checkpoint_path":
            newest = int(match[1])
        else:
            listed.append(int(match[1]))
    if newest is None:
        if listed:
            raise ValueError("it names no newest checkpoint (no model_checkpoint_path)")
        return []  # the empty index of a run that has not saved a checkpoint yet
    return sorted({step for step in listed if step < newest}) + [newest]


def short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
