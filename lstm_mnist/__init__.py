"""lstm_mnist: an LSTM that classifies MNIST digits by reading each image one row at a time.

Read the package in three tiers:

1. The story, top to bottom: config.py (settings and geometry) -> data.py
   (images become sequences of rows) -> model.py (the network) -> train.py
   (the train step, an epoch, an evaluation, the driver).
2. Inside the LSTM: lstm_cell.py -> bptt.py -> gates.py -> reading.py -> gradient_flow.py.
3. Instruments, read when needed: dashboard.py and summaries.py (TensorBoard),
   where MNIST's bytes come from, run.py (the run folder, checkpoints, Ctrl-C,
   --resume), durable.py and errors.py, cli.py (the command).

Importing the package does nothing but define names.
"""

__version__ = "0.1.0"
