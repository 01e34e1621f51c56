"""Every ```python block of the README runs, so none can break again unseen.

The conventions the README's blocks follow, and this test enforces:

- A block is a program: it is run as it stands, in a fresh namespace, with an empty temporary
  folder as the working directory and MNIST from the test session's decoded cache (no download).
- A run folder a block names as `"logs/<name>"` is there when it runs: a copy of the session's
  tiny finished run (conftest.tiny_finished_run: one epoch on 256 images, 8 units) under that
  name. So a block can load a run as a reader loads theirs; what it prints are the tiny run's
  numbers, not the README's (those come from the commands and machine the README names).
- A block fenced as ```python excerpt is not a program but lines quoted from the package: its
  first line names the file (`# from lstm_mnist/train.py`), and every other line of code in it
  must appear in that file (compared without indentation and trailing comments), so the excerpt
  cannot drift from the code it shows.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(python[^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
RUN_FOLDER = re.compile(r"""["']logs/([\w.-]+)["']""")


def python_blocks(kind: str) -> list:
    """(line number, code) of every ```python block, `kind` "program" or "excerpt"."""
    blocks = []
    for match in BLOCK.finditer(README):
        is_excerpt = "excerpt" in match[1].split()[1:]
        if is_excerpt == (kind == "excerpt"):
            blocks.append(pytest.param(match[2], id=f"README.md:{README.count(chr(10), 0, match.start()) + 1}"))
    return blocks


def code_lines(text: str) -> list[str]:
    """The lines of code in `text`, stripped of indentation and trailing comments; blank and comment lines dropped."""
    lines = []
    for line in text.splitlines():
        code = re.sub(r"\s+#.*$", "", line).strip()
        if code and not code.startswith("#"):
            lines.append(code)
    return lines


def test_the_readme_has_python_blocks_of_both_kinds():
    # Guards the extraction itself: a fence this test no longer recognised would make the tests below vacuous.
    assert len(python_blocks("program")) >= 2 and len(python_blocks("excerpt")) >= 1


@pytest.mark.parametrize("code", python_blocks("program"))
def test_every_python_block_runs(code, tiny_finished_run, offline_mnist_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in set(RUN_FOLDER.findall(code)):
        shutil.copytree(tiny_finished_run, tmp_path / "logs" / name)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("code", python_blocks("excerpt"))
def test_every_excerpt_is_in_the_file_it_names(code):
    first, *rest = code.splitlines()
    match = re.fullmatch(r"# from (\S+)", first.strip())
    assert match, f"an excerpt's first line names its file (# from lstm_mnist/...), not {first!r}"
    source = code_lines((ROOT / match[1]).read_text())
    excerpt = code_lines("\n".join(rest))
    missing = [line for line in excerpt if line not in source]
    assert not missing, f"lines of the README's excerpt that are not in {match[1]}: {missing}"
    # And in the same order, one after the other, as the file has them: a quotation, not a paraphrase.
    starts = [i for i, line in enumerate(source) if line == excerpt[0]]
    assert any(source[i:i + len(excerpt)] == excerpt for i in starts), \
        f"the README's excerpt has the lines of {match[1]}, but not as one passage in the file's order"


def test_the_line_counts_of_each_tier_are_true():
    """"The code, in reading order" counts each tier with a command; the counts must be what the command says."""
    start = README.index("How long each tier is")
    block = re.search(r"```\w*\n(.*?)```", README[start:], re.S).group(1)
    commands = re.findall(r"^(wc -l .*?)\s+#.*?(\d+) lines$", block, re.M)
    assert len(commands) == 3
    for command, claimed in commands:
        output = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        total = int(output.strip().splitlines()[-1].split()[0])
        assert total == int(claimed), f"`{command}` now counts {total} lines, the README says {claimed}"
