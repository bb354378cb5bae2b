"""The package installs like a library: every import is declared, as a range; exact pins live in constraints.txt."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
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


@functools.cache
def installed_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution_of(module: str) -> str:
    distributions = installed_distributions().get(module)
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
    (dev_extras,) = [r.extras for r in map(Requirement, PROJECT["optional-dependencies"]["dev"])
                     if canonicalize_name(r.name) == "ssl-toolkit"]
    assert set(EXTRAS) - {"dev"} <= dev_extras, "CI tests every optional path: dev installs every extra"


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


def fake_distribution(site: Path, name: str, version: str, requires: str = "") -> None:
    """Metadata of an installed distribution, without its code: all that pip's resolver reads."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def test_pip_install_into_an_environment_with_another_compatible_torch_keeps_it(tmp_path):
    """``pip install .`` where a user's torch 2.5.1 CUDA build is installed: pip's resolver must install
    this package alone. Offline and without installing: ``--dry-run --no-index``, so a resolver that
    wanted another torch could only fail."""
    pytest.importorskip("setuptools")  # the metadata is built without an isolated build environment
    environment = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True)
    python = environment / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # Every distribution installed here except torch, torchvision and this project ...
    skip = re.compile(r"(torch|torchvision|ssl_toolkit|ssl-toolkit|__editable__.*ssl_toolkit.*)([-.].*)?$")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not skip.match(entry.name):
            (site / entry.name).symlink_to(entry)
    # ... and, as a user's own CUDA build, torch 2.5.1 with its torchvision.
    fake_distribution(site, "torch", "2.5.1+cu121")
    fake_distribution(site, "torchvision", "0.20.1+cu121", "Requires-Dist: torch==2.5.1\n")
    source = tmp_path / "source"  # building metadata writes an egg-info folder: not into the checkout
    source.mkdir()
    for item in ("pyproject.toml", "README.md", "ssl_toolkit", "algorithms"):
        copy = shutil.copytree if (ROOT / item).is_dir() else shutil.copy
        copy(ROOT / item, source / item, **({"ignore": shutil.ignore_patterns("algorithms", "__pycache__")}
                                            if item == "ssl_toolkit" else {}))
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    environ["PIP_CONFIG_FILE"] = os.devnull  # no machine-wide index, find-links or constraints
    report = tmp_path / "report.json"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run", "--no-index",
           "--no-build-isolation", "--report", str(report), str(source)]
    result = subprocess.run(pip, capture_output=True, text=True, env=environ, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    installs = [(item["metadata"]["name"], item["metadata"]["version"]) for item in json.loads(report.read_text())
                ["install"]]
    assert installs == [("ssl-toolkit", PROJECT["version"])]
