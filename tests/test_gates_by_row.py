"""scripts/gates_by_row.py, in its tiny mode: its table is the trained LSTM's own gates, row by row."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from lstm_mnist.config import TIMESTEPS, Config
from lstm_mnist.data import images_to_sequences
from lstm_mnist.lstm_cell import lstm_forward
from lstm_mnist.model import build_model

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gates_by_row.py"


def run_script(*args, env):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_table_is_the_models_gates_on_the_first_validation_digits(tmp_path, cli_env, mnist):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = build_model(Config(units=4))  # random weights are enough: the script must report them faithfully
    model.save(run_dir / "model.keras")
    (run_dir / "config.json").write_text(json.dumps({"data": "", "val_size": 100}))

    result = run_script(run_dir, "--digits", 16, env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line[:3].strip().isdigit()]
    table = np.array([[float(cell.rstrip("%")) for cell in row] for row in rows[:TIMESTEPS]])  # (T, 10)
    assert table[:, 0].tolist() == list(range(TIMESTEPS))

    x = images_to_sequences(mnist.x_train[:16])  # the validation split is the first --val-size training images
    cell = model.get_layer("lstm_1").cell
    _, c_seq, gates = lstm_forward(x, cell.kernel, cell.recurrent_kernel, cell.bias)  # each (16, T, 4)
    columns = {  # column of the printed table -> what it must be, per row
        1: 100 * np.mean(x.max(axis=2) > 0, axis=0),  # ink, in %
        2: gates.input.mean(axis=(0, 2)),
        4: np.abs(gates.input * gates.candidate).mean(axis=(0, 2)),  # written
        5: gates.forget.mean(axis=(0, 2)),
        8: gates.output.mean(axis=(0, 2)),
        9: np.abs(c_seq).mean(axis=(0, 2)),
    }
    for column, expected in columns.items():
        np.testing.assert_allclose(table[:, column], expected, atol=0.51 if column == 1 else 0.0006,
                                   err_msg=f"column {column}")


def test_a_folder_that_is_not_a_run_is_refused_in_one_line(tmp_path, cli_env):
    result = run_script(tmp_path, env=cli_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"gates_by_row.py: error: {tmp_path} has no model.keras; pass the folder of a finished run")
