"""The package installs like a library: every import is declared, as a range; exact pins live in constraints.txt."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ssl_toolkit.loggers import OPTIONAL_PACKAGES

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FIRST_PARTY = {"ssl_toolkit", "algorithms"}


def requirements(items: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, items)}


DEPENDENCIES = requirements(PROJECT["dependencies"])
EXTRAS = {extra: requirements(items) for extra, items in PROJECT["optional-dependencies"].items()}


def third_party_imports() -> dict[str, dict[str, bool]]:
    """Top-level module -> {file: imported at module level?} for every absolute import outside the
    standard library in ssl_toolkit/ and algorithms/."""
    found: dict[str, dict[str, bool]] = {}
    for folder in ("ssl_toolkit", "algorithms"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if folder == "ssl_toolkit" and "algorithms" in path.relative_to(ROOT / folder).parts:
                continue  # the symlink to algorithms/
            tree = ast.parse(path.read_text())
            top_level = {id(node) for node in tree.body}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    module = name.split(".")[0]
                    if module in sys.stdlib_module_names or module in FIRST_PARTY or module == "__future__":
                        continue
                    file = str(path.relative_to(ROOT))
                    found.setdefault(module, {})[file] = found.get(module, {}).get(file, False) or (
                        id(node) in top_level)
    return found


def distribution_of(module: str) -> str:
    distributions = importlib.metadata.packages_distributions().get(module)
    assert distributions, f"{module} is imported but no installed distribution provides it"
    return canonicalize_name(distributions[0])


def test_every_third_party_import_is_declared_and_module_level_ones_are_dependencies():
    imports = third_party_imports()
    assert {"torch", "timm", "numpy", "PIL", "yaml", "sklearn", "safetensors", "wandb"} <= set(imports)
    optional = {name for extra in EXTRAS.values() for name in extra}
    for module, files in imports.items():
        distribution = distribution_of(module)
        if distribution in DEPENDENCIES:
            continue
        assert distribution in optional, f"{module} ({distribution}) is imported in {sorted(files)} but not declared"
        eager = [file for file, at_top in files.items() if at_top]
        assert not eager, f"optional {distribution} is imported at module level in {eager}; import it where used"


def test_each_optional_logger_package_is_an_extra_of_its_name():
    for module, extra in OPTIONAL_PACKAGES.values():
        assert canonicalize_name(module) in EXTRAS[extra], f"extra [{extra}] does not install {module}"
    assert "ssl-toolkit[tensorboard,wandb]" in PROJECT["optional-dependencies"]["dev"], "CI tests every logger"


@pytest.mark.parametrize("installed", ["2.4.0", "2.5.1+cu121", "2.7.0+cpu", "2.14.1"])
def test_torch_is_a_range_that_keeps_other_compatible_builds(installed):
    assert DEPENDENCIES["torch"].specifier.contains(Version(installed), prereleases=False)


def test_no_dependency_is_pinned_exactly():
    pinned = [str(r) for extra in [DEPENDENCIES, *EXTRAS.values()] for r in extra.values()
              if any(spec.operator in ("==", "===") for spec in r.specifier)]
    assert not pinned, f"pins belong in constraints.txt: {pinned}"


def test_constraints_pin_torch_and_every_declared_package_within_its_range():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            pins[canonicalize_name(name)] = Version(version)
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")
    for requirement in [*DEPENDENCIES.values(), *EXTRAS["tensorboard"].values(), *EXTRAS["wandb"].values()]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name]), f"constraints.txt pins {name} outside {requirement}"


def test_every_subpackage_is_listed_for_installation():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "ssl_toolkit").rglob("__init__.py")
               if "algorithms" not in path.relative_to(ROOT / "ssl_toolkit").parts}
    assert on_disk <= listed, f"not installed by pip install .: {sorted(on_disk - listed)}"
