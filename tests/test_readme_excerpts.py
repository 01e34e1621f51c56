"""The README quotes the code and counts it: both claims are checked here, so neither drifts."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def fenced_block_after(marker: str) -> str:
    """The first fenced code block after the sentence `marker` in the README."""
    start = README.index(marker)
    match = re.search(r"```\w*\n(.*?)```", README[start:], re.S)
    return match.group(1)


def test_the_training_step_excerpt_is_in_train_py_line_for_line():
    excerpt = fenced_block_after("The training step, the heart of it").strip("\n").splitlines()
    code = [line.strip() for line in (ROOT / "lstm_mnist" / "train.py").read_text().splitlines()]
    stripped = [line.strip() for line in excerpt]
    # The excerpt's lines appear in train.py consecutively and in order (indentation aside).
    starts = [i for i, line in enumerate(code) if line == stripped[0]]
    assert any(code[i:i + len(stripped)] == stripped for i in starts), \
        "the README's training-step excerpt no longer matches lstm_mnist/train.py; quote the code again"


def test_the_line_counts_of_each_tier_are_true():
    block = fenced_block_after("How long each tier is")
    commands = re.findall(r"^(wc -l .*?)\s+#.*?(\d+) lines$", block, re.M)
    assert len(commands) == 3
    for command, claimed in commands:
        output = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        total = int(output.strip().splitlines()[-1].split()[0])
        assert total == int(claimed), f"`{command}` now counts {total} lines, the README says {claimed}"
