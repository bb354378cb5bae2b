"""The example plugin package installs, registers "ict" through its entry point, and runs through compare."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "ict_plugin"


def test_installed_plugin_is_found_by_its_entry_point_and_compared_with_supervised(tmp_path):
    target = tmp_path / "site"
    source = shutil.copytree(PLUGIN, tmp_path / "ict_plugin", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    # Offline and quick: no dependencies (ssl-toolkit and scipy are already here), no build isolation; built
    # from a copy, so the build leaves nothing in the source tree.
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
               "--no-index", "--target", str(target), str(source)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(target.glob("ssl_bench_ict-*.dist-info/entry_points.txt"))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "runs"
    compare = [sys.executable, "-m", "ssl_toolkit", "compare", "--algos", "supervised,ict", "--dataset", "digits",
               "--labels", "50", "--seeds", "0", "--steps", "20", "--eval-every", "10", "--jobs", "2",
               "--out", str(out)]
    result = subprocess.run(compare, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((out / "digits-50" / "ict" / "seed0" / "final.json").read_text())
    assert final["algo"] == "ict" and set(final["test_error"]) == {"student", "teacher"}
    assert "ict" in result.stdout
