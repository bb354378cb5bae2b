"""The runnable examples of docs/extending.md run as written, so the page cannot drift from the code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"


def example(name: str) -> str:
    """The ```python block that follows the marker ``<!-- runnable example: NAME ... -->``."""
    found = re.search(rf"<!-- runnable example: {re.escape(name)} .*?-->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"docs/extending.md has no runnable example {name!r}"
    return found.group(1)


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # A process of its own: the example's registrations must not leak into this test session.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_plugin_example_trains_its_algorithm_on_its_data_set_and_passes_the_conformance_checks(tmp_path):
    (tmp_path / "bars_plugin.py").write_text(example("bars_plugin.py"))
    run_python(["-m", "ssl_toolkit", "run", "--plugin", "bars_plugin.py", "--algo", "sharp_teacher", "--dataset",
                "bars", "--steps", "40", "--eval-every", "20", "--threads", "1", "--quiet", "--out", "run"], tmp_path)
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["backbone"] == "bars_mlp" and set(final["test_error"]) == {"student", "teacher"}
    check = ("from ssl_toolkit.registry import load_plugin; from ssl_toolkit.testing import check_algorithm; "
             "load_plugin('bars_plugin.py'); check_algorithm('sharp_teacher', learning=False)")
    run_python(["-c", check], tmp_path)


def test_the_train_on_arrays_example_trains_and_predicts(tmp_path):
    result = run_python(["-c", example("train_on_arrays")], tmp_path)
    error_line, predicted_line = result.stdout.strip().splitlines()[-2:]
    assert re.fullmatch(r"\{'student': \d+\.\d+\}", error_line), error_line
    assert re.fullmatch(r"\[( ?\d)+\]", predicted_line), predicted_line
    assert (tmp_path / "runs" / "my-digits" / "arrays.npz").is_file()
