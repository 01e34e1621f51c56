"""lstm_mnist: an LSTM that classifies MNIST digits by reading each image one row at a time.

Read the package in this order: config.py (settings and geometry), data.py
(images become sequences), model.py (the network), train.py (the loop),
summaries.py (what TensorBoard shows), rundir.py (what a run leaves behind),
cli.py (the command). Importing the package does nothing but define names.
"""

__version__ = "0.1.0"
