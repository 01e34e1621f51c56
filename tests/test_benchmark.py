"""scripts/benchmark.py runs every part in its quick mode: tables, JSON and the figure come out.

Kept apart from test_scripts.py: it is the suite's longest test (about a minute), and
pytest-xdist hands out whole modules (--dist loadfile), so here it runs beside the others.
"""

import json

from test_scripts import run_script


def test_benchmark_script(tmp_path, cli_env):
    """Every part, in tiny sizes: tables, JSON and the figure come out (the numbers mean nothing at this size)."""
    report, figure = tmp_path / "benchmark.json", tmp_path / "recipe.png"
    result = run_script("benchmark.py", "--quick", "--json", report, "--figure", figure, env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for title in ("Training throughput", "What TensorBoard logging costs", "Where a step's time goes",
                  "Start-up of a one-step run", "Peak resident memory", "Accuracy of the default recipe",
                  "One CPU against two logical CPUs", "TensorFlow's threads, ours and model.fit"):
        assert f"## {title}" in result.stdout, title
    numbers = json.loads(report.read_text())
    assert {"machine", "throughput", "logging", "steps", "startup", "memory", "accuracy", "strategies",
            "threads"} <= set(numbers)
    assert numbers["machine"]["cores"] >= 1 and numbers["machine"]["tensorflow"]
    assert numbers["throughput"]["ours"]["wall_ratio_to_fit"]["median"] > 0
    assert numbers["startup"]["ours, second run"]["first_step_done"] > numbers["startup"]["ours, second run"]["imported"]
    assert len(numbers["accuracy"]["runs"]["0"]["curve"]) == 2  # one point per epoch
    for name, entry in numbers["threads"].items():  # each setting ran, in its own process
        assert entry["images_per_second_median"] > 0, name
    assert numbers["threads"]["ours, 2 operations at once, 1 thread each"]["wall_ratio_to_fit"]["median"] > 0
    assert figure.stat().st_size > 10_000
    redrawn = tmp_path / "again.png"
    again = run_script("benchmark.py", "--redraw", report, "--figure", redrawn, env=cli_env, cwd=tmp_path)
    assert again.returncode == 0 and redrawn.stat().st_size > 10_000, again.stderr
