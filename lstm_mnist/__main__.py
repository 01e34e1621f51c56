"""`python -m lstm_mnist train ...` does what the `lstm-mnist` command does."""

import sys

from lstm_mnist.cli import main

sys.exit(main())
