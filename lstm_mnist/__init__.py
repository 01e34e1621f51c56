"""lstm_mnist: an LSTM that classifies MNIST digits by reading each image one row at a time.

Read the package in three tiers:

1. The story, top to bottom: config.py (settings and geometry) -> data.py
   (images become sequences of rows) -> model.py (the network) -> train.py
   (the train step, an epoch, an evaluation, the driver).
2. Inside the LSTM: lstm_cell.py -> bptt.py -> gates.py -> reading.py -> gradient_flow.py.
3. Instruments, read when needed: dashboard.py, summaries.py and figures.py
   (TensorBoard), mnist_files.py (load_mnist: where MNIST's bytes come from), run.py (the
   run folder, checkpoints, Ctrl-C, --resume), steps.py (ten steps per compiled
   call, the running means), distribution.py (--strategy), mixed_precision.py, durable.py
   and errors.py, cli.py and config_checks.py (the command and its checks);
   after training, saved.py (load_run, preprocess), evaluate.py, predict.py,
   runs.py, quiet.py.

After training, two names are all a notebook needs:

    import lstm_mnist
    model, config = lstm_mnist.load_run("logs/20261123-104151-lstm128")
    probabilities = keras.ops.softmax(model(lstm_mnist.preprocess(images, config)))

Importing the package does nothing but define names: `load_run` and
`preprocess` are looked up on first use (PEP 562), so `import lstm_mnist`
imports neither TensorFlow nor NumPy, and TensorFlow is imported, quietly,
only when a model is loaded.
"""

__version__ = "0.1.0"
__all__ = ["load_run", "preprocess", "__version__"]

# Where each public name lives; imported on first use.
_PUBLIC = {"load_run": "lstm_mnist.saved", "preprocess": "lstm_mnist.saved"}


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lstm_mnist' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
