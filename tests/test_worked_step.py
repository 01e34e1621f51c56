"""The README's lesson is the code's: the step worked by hand, and the glossary it links to.

The README's "A step by hand" block is read from the README itself: its
inputs and weights go into `lstm_step`, and every value printed below them
must be what the code computes, rounded to three decimals. Nothing is copied
into this file, so changing any number on the page fails the check (the
last tests prove it by changing each one in turn).
"""

import math
import re
from pathlib import Path

import numpy as np
import pytest

from lstm_mnist.lstm_cell import lstm_step

README = Path(__file__).resolve().parent.parent / "README.md"
DECIMAL = re.compile(r"-?\d+\.\d+")  # the numbers of the worked step are all written with a decimal point
INPUTS = ("x_t", "h_{t-1}", "c_{t-1}", "W[0]", "W[1]", "U[0]", "U[1]", "b")


def section(text: str, heading: str) -> str:
    """The text of a README section, from its heading to the next heading of any level."""
    start = text.index(f"\n{heading}\n")
    following = re.search(r"\n#{1,6} ", text[start + 1:])
    return text[start:start + 1 + following.start()] if following else text[start:]


def worked_step_block(text: str) -> str:
    """The ```text block of the README's "A step by hand"."""
    match = re.search(r"```text\n(.*?)```", section(text, "### A step by hand"), re.S)
    assert match, 'the README\'s "A step by hand" has no ```text block'
    return match.group(1)


def labelled_numbers(block: str) -> dict[str, list[str]]:
    """{label: the decimal numbers printed after its first "="}, as written.

    A line "(n)  label = ..." or "label = ..." starts a label; a line that
    begins with "=" continues the one above. Lines without "=" are prose.
    """
    numbers: dict[str, list[str]] = {}
    label = None
    for line in block.splitlines():
        if "=" not in line:
            continue
        left, right = line.split("=", 1)
        left = re.sub(r"^\s*\(\d\)", "", left).strip()
        if left:
            label = left
            assert label not in numbers, f"the worked step prints {label!r} twice"
            numbers[label] = []
        assert label is not None, f"a continuation line with nothing above it: {line!r}"
        numbers[label] += DECIMAL.findall(right)
    return numbers


def computed(numbers: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """What the code computes from the block's inputs, for every label the block must print."""
    x, h_prev, c_prev, *rows, bias = (np.array([float(value) for value in numbers[name]]) for name in INPUTS)
    kernel, recurrent_kernel = np.stack(rows[:2]), np.stack(rows[2:])  # W (F, 4H), U (R, 4H): one row per line
    h, c, gates = lstm_step(x[None], h_prev[None], c_prev[None], kernel, recurrent_kernel, bias)  # a batch of 1
    h, c = np.asarray(h)[0], np.asarray(c)[0]
    i, f, g, o = (np.asarray(gate)[0] for gate in gates)
    # z_t is not returned by lstm_step; recover it from the gates it produced (inverse sigmoid and tanh),
    # so that the printed z_t is the code's too, and check that it is x_t W + h_{t-1} U + b.
    z = np.concatenate([np.log(i / (1 - i)), np.log(f / (1 - f)), np.arctanh(g), np.log(o / (1 - o))])
    np.testing.assert_allclose(z, x @ kernel + h_prev @ recurrent_kernel + bias, atol=1e-9)
    tanh_c = np.tanh(c)
    return {
        "x_t W": x @ kernel,
        "h_{t-1} U": h_prev @ recurrent_kernel,
        "z_t": z,
        "i_t": i,
        "f_t": f,
        "g_t": g,
        # per unit: f * c_{t-1} + i * g, then the result
        "c_t": np.concatenate([np.stack([f, c_prev, i, g], axis=1).ravel(), c]),
        "o_t": o,
        # per unit: o * tanh(c), then o * (its value), then the result
        "m_t": np.concatenate([np.stack([o, c], axis=1).ravel(), np.stack([o, tanh_c], axis=1).ravel(),
                               o * tanh_c]),
        "h_t": h,
    }


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def three_decimals(value: float) -> str:
    return f"{value:.3f}".replace("-0.000", "0.000")


def check_worked_step(readme_text: str) -> None:
    """Raise AssertionError unless every value the block prints is lstm_step's, to three decimals."""
    numbers = labelled_numbers(worked_step_block(readme_text))
    missing = [name for name in INPUTS if not numbers.get(name)]
    assert not missing, f"the worked step does not give {missing}"
    expected = computed(numbers)
    assert set(numbers) == set(INPUTS) | set(expected), (
        f"the worked step's lines should be {sorted(set(INPUTS) | set(expected))}, got {sorted(numbers)}")
    for label, values in expected.items():
        want = [three_decimals(value) for value in values]
        assert numbers[label] == want, f"README, A step by hand: {label} should read {want}, not {numbers[label]}"


def test_every_value_printed_in_the_readme_is_what_lstm_step_computes():
    check_worked_step(README.read_text())


def test_the_arithmetic_can_be_redone_by_hand_from_the_printed_values():
    """A reader with a calculator, starting from the rounded values on the page, gets the printed results."""
    numbers = labelled_numbers(worked_step_block(README.read_text()))
    c_terms = [float(value) for value in numbers["c_t"]]
    m_terms = [float(value) for value in numbers["m_t"]]
    units = len(numbers["c_{t-1}"])  # H
    for unit in range(units):
        f, c_prev, i, g = c_terms[4 * unit:4 * unit + 4]
        assert f"{f * c_prev + i * g:.3f}" == f"{c_terms[4 * units + unit]:.3f}", f"c_t of unit {unit}"
        o, c = m_terms[2 * unit:2 * unit + 2]
        o_again, tanh_c = m_terms[2 * units + 2 * unit:2 * units + 2 * unit + 2]
        assert o_again == o and f"{math.tanh(c):.3f}" == f"{tanh_c:.3f}", f"tanh(c_t) of unit {unit}"
        assert f"{o * tanh_c:.3f}" == f"{m_terms[4 * units + unit]:.3f}", f"m_t of unit {unit}"
    z = [float(value) for value in numbers["z_t"]]
    # z_t's four blocks, in the gate order: input, forget, candidate, output
    for block, (label, activation) in enumerate([("i_t", sigmoid), ("f_t", sigmoid), ("g_t", math.tanh),
                                                 ("o_t", sigmoid)]):
        by_hand = [f"{activation(value):.3f}" for value in z[block * units:(block + 1) * units]]
        assert by_hand == numbers[label], label


def test_changing_any_number_in_the_worked_step_fails_the_check():
    """Every number of the block matters: nudge any one of them, input or result, and the check fails."""
    text = README.read_text()
    block = worked_step_block(text)
    offset = text.index(block)
    tokens = list(DECIMAL.finditer(block))
    assert len(tokens) > 60
    for token in tokens:
        written = token.group()
        decimals = len(written.split(".")[1])
        nudged = f"{float(written) + 10.0 ** -decimals:.{decimals}f}"  # 1.0 -> 1.1, 0.818 -> 0.819
        start, end = offset + token.start(), offset + token.end()
        with pytest.raises(AssertionError):
            check_worked_step(text[:start] + nudged + text[end:])


def test_numbers_in_the_words_around_the_worked_step_are_the_blocks():
    """The sentences under the block quote its values; if the block changes, they cannot silently disagree."""
    text = README.read_text()
    block = worked_step_block(text)
    words = section(text, "### A step by hand").replace(block, "")
    quoted = DECIMAL.findall(words)
    assert len(quoted) >= 10
    assert set(quoted) <= set(DECIMAL.findall(block)), sorted(set(quoted) - set(DECIMAL.findall(block)))


# --- The glossary ---------------------------------------------------------------------------------------------

# How each glossary term shows up in the README's prose (case-insensitive): its first use must link to it.
GLOSSARY_TERMS = {
    "Logits": r"\blogits?\b",
    "Softmax": r"\bsoftmax\b",
    "Cross-entropy": r"\bcross-entropy\b",
    "Global norm and clipping": r"\bglobal (?:gradient )?norm\b|\bclip(?:s|ped|ping)?\b",
    "Warmup": r"\bwarm-?up\b",
    "Cosine decay": r"\bcosine\b",
    "Adam's moments": r"\bAdam\b",
    "BPTT": r"\bBPTT\b|\bbackpropagation through time\b",
    "Peephole": r"\bpeepholes?\b",
    "LSTMP": r"\bLSTMP\b",
    "cuDNN": r"\bcuDNN\b",
    "Epoch, step, batch": r"\bepochs?\b|\bbatch(?:es)?\b",
}


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def blank(match: re.Match) -> str:
    return " " * len(match.group())


def prose_and_links(text: str) -> tuple[str, list[tuple[int, int, str]]]:
    """The README with code, headings, images and link targets blanked out (same length, so positions
    hold), and every in-page link as (start, end, anchor) of its text."""
    text = re.sub(r"```.*?```", blank, text, flags=re.S)  # fenced code
    text = re.sub(r"`[^`\n]*`", blank, text)  # inline code
    text = re.sub(r"(?m)^#{1,6} .*$", blank, text)  # headings
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", blank, text)  # images
    links = []
    for match in re.finditer(r"\[([^\]]*)\]\(([^)]*)\)", text):
        if match.group(2).startswith("#"):
            links.append((match.start(1), match.end(1), match.group(2)[1:]))
    text = re.sub(r"(?<=\])\([^)]*\)", blank, text)  # link targets
    return text, links


def test_every_glossary_term_is_linked_from_its_first_use():
    text = README.read_text()
    glossary_start = text.index("\n## Glossary\n")
    glossary = text[glossary_start:].split("\n## ")[1]  # up to the next section, if any
    headings = re.findall(r"(?m)^### (.+)$", glossary)
    assert sorted(headings) == sorted(GLOSSARY_TERMS), "every glossary entry needs a pattern here, and back"
    prose, links = prose_and_links(text[:glossary_start])
    for term, pattern in GLOSSARY_TERMS.items():
        first = re.search(pattern, prose, re.I if term != "Adam's moments" else 0)
        assert first, f"the README never uses {term!r} before the glossary"
        anchor = github_anchor(term)
        line = text.count("\n", 0, first.start()) + 1
        assert any(start <= first.start() and first.end() <= end and target == anchor
                   for start, end, target in links), (
            f"README line {line}: the first use of {term!r} ({first.group()!r}) should link to #{anchor}")


def test_every_in_page_link_lands_on_a_heading():
    text = README.read_text()
    anchors = {github_anchor(heading) for heading in re.findall(r"(?m)^#{1,6} (.+)$",
                                                                re.sub(r"```.*?```", "", text, flags=re.S))}
    targets = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert targets, "the README links to its own sections"
    assert targets <= anchors, f"links to headings that do not exist: {sorted(targets - anchors)}"
