"""A user's algorithm in their own module joins the registry with --plugin and trains."""

import json
import sys
import textwrap

import pytest

from ssl_toolkit.cli import main
from ssl_toolkit.registry import list_algorithms
from ssl_toolkit.testing import tiny_run_flags

pytestmark = pytest.mark.e2e

PLUGIN = textwrap.dedent(
    '''
    from dataclasses import dataclass

    import torch

    from ssl_toolkit import ConsistencyAlgorithm, ConsistencyConfig, register_algorithm


    @dataclass
    class SharpPiConfig(ConsistencyConfig):
        temperature: float = 0.5


    @register_algorithm("sharp_pi_test_plugin")
    class SharpPi(ConsistencyAlgorithm):
        """Pi-model against a sharpened, detached second pass."""

        Config = SharpPiConfig
        views = {"student": "weak", "teacher": "weak"}

        def teacher_targets(self, batch, output):
            with torch.no_grad():
                return self.student(batch.view("teacher")) / self.config.temperature
    '''
)


def test_plugin_module_registers_an_algorithm_that_trains_with_its_own_hyperparameter(tmp_path, monkeypatch):
    (tmp_path / "my_ssl_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    argv = ["run", "--plugin", "my_ssl_plugin", "--algo", "sharp_pi_test_plugin", *tiny_run_flags()]
    argv += ["--set", "temperature=0.3", "--out", str(out)]
    try:
        assert main(argv) == 0
        assert "sharp_pi_test_plugin" in list_algorithms()
        config = json.loads((out / "config.json").read_text())
        assert config["hparams"]["temperature"] == 0.3 and config["plugins"] == ["my_ssl_plugin"]
        assert json.loads((out / "final.json").read_text())["algo"] == "sharp_pi_test_plugin"
    finally:
        sys.modules.pop("my_ssl_plugin", None)


def test_missing_plugin_module_is_a_one_line_error(capsys):
    assert main(["run", "--plugin", "no_such_plugin_module", "--steps", "5"]) == 2
    assert "--plugin 'no_such_plugin_module': module not found" in capsys.readouterr().err
