"""TEMPORARY: summaries.py (helper B's, on this branch) still imports plain_reason from here.

The lead deletes this file at merge; checkpoints live in run.py, plain_reason in errors.py.
"""

from lstm_mnist.errors import plain_reason  # noqa: F401
