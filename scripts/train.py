#!/usr/bin/env python
"""Train from a checkout: `python scripts/train.py --epochs 2` is `lstm-mnist train --epochs 2`."""

import sys
from pathlib import Path

# Let the script run from a checkout that was not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lstm_mnist.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
