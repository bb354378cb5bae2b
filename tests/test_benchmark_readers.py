"""The benchmark scripts that read finished run folders agree with what the run recorded.

They rebuild the trainer from a run folder outside the engine's own code paths, so an engine change
can leave them behind silently (benchmarks/labeled_fit.py once read a field the engine had renamed).
"""

import importlib.util
import json
from pathlib import Path

from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.runner import execute_run
from ssl_toolkit.testing import TINY_RUN

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_labeled_fit_reproduces_the_recorded_test_error_of_every_model(tmp_path):
    out = tmp_path / "run"
    # Two heads: the script must score the classification head, as the run did.
    config = resolve_run_config({**TINY_RUN, "algo": "mean_teacher", "steps": 8, "eval_every": 8, "out": str(out),
                                 "hparams": {"logit_distance_cost": 0.01}})
    execute_run(config, quiet=True)
    recorded = json.loads((out / "final.json").read_text())["test_error"]

    step, errors = _load("labeled_fit").labeled_and_test_error(out)

    assert step == 8
    assert set(errors) == set(recorded) == {"student", "teacher"}
    for model, (labeled_error, test_error) in errors.items():
        assert test_error == recorded[model]
        assert 0.0 <= labeled_error <= 100.0
