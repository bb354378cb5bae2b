"""Shipped presets: each resolves, its hyperparameters fit its algorithm, the command line wins, and
its published number is the one the papers report (typed in here from ../shared/REFERENCE.md and the
Mean Teacher paper's Table 3, independently of the YAML files). A setting file serves every algorithm
through its sections, and a base file's values reach the settings that extend it."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ssl_toolkit.config.presets as presets_module
from ssl_toolkit.algorithm import DataContext
from ssl_toolkit.config import PRESET_DIR, get_preset, list_presets, resolve_run_config
from ssl_toolkit.registry import get_algorithm

REPO = Path(__file__).resolve().parents[1]
ALL_PRESETS = list_presets()
PRESETS = sorted(ALL_PRESETS)
ALGORITHMS = ("supervised", "pi_model", "temporal_ensembling", "mean_teacher")

# Published error (%) of each paper row, from REFERENCE.md ("Published numbers") and the MT paper text
# (Table 3: SVHN, 500 labels, 573257 images). "—": the paper gives no number for that row.
PUBLISHED = {
    ("svhn", 250, "supervised"): "27.77 ± 3.18",
    ("svhn", 250, "pi_model"): "9.69 ± 0.92",
    ("svhn", 250, "temporal_ensembling"): "—",
    ("svhn", 250, "mean_teacher"): "4.35 ± 0.50",
    ("svhn", 500, "supervised"): "16.88 ± 1.30",
    ("svhn", 500, "pi_model"): "6.83 ± 0.66",
    ("svhn", 500, "temporal_ensembling"): "5.12 ± 0.13",
    ("svhn", 500, "mean_teacher"): "4.18 ± 0.27",
    ("svhn", 1000, "supervised"): "12.32 ± 0.95",
    ("svhn", 1000, "pi_model"): "4.95 ± 0.26",
    ("svhn", 1000, "temporal_ensembling"): "4.42 ± 0.16",
    ("svhn", 1000, "mean_teacher"): "3.95 ± 0.19",
    ("cifar10", 1000, "supervised"): "46.43 ± 1.21",
    ("cifar10", 1000, "pi_model"): "27.36 ± 1.20",
    ("cifar10", 1000, "temporal_ensembling"): "—",
    ("cifar10", 1000, "mean_teacher"): "21.55 ± 1.48",
    ("cifar10", 2000, "supervised"): "33.94 ± 0.73",
    ("cifar10", 2000, "pi_model"): "18.02 ± 0.60",
    ("cifar10", 2000, "temporal_ensembling"): "—",
    ("cifar10", 2000, "mean_teacher"): "15.73 ± 0.31",
    ("cifar10", 4000, "supervised"): "20.66 ± 0.57",
    ("cifar10", 4000, "pi_model"): "13.20 ± 0.27",
    ("cifar10", 4000, "temporal_ensembling"): "12.16 ± 0.31",
    ("cifar10", 4000, "mean_teacher"): "12.31 ± 0.28",
}
SHORT = {"sup": "supervised", "pi": "pi_model", "te": "temporal_ensembling", "mt": "mean_teacher"}
EXPECTED = {
    **{f"{s}-{d}-{n}-convnet13": PUBLISHED[(d, n, a)] for s, a in SHORT.items() for (d, n, a2) in PUBLISHED if a2 == a},
    "mt-svhn-500-extra-convnet13": "2.46 ± 0.06",
    "pi-svhn-500-extra-convnet13": "3.26 ± 0.14",
    "mt-cifar10-4000-shakeshake26": "6.28 ± 0.15",
    "sup-cifar10-4000-wrn28-2": "20.26",
    "pi-cifar10-4000-wrn28-2": "16.37",
    "mt-cifar10-4000-wrn28-2": "15.87",
    "sup-svhn-1000-wrn28-2": "12.83",
    "pi-svhn-1000-wrn28-2": "7.19",
    "mt-svhn-1000-wrn28-2": "5.65",
    "digits-cpu": "—",
    "fmnist-cpu": "—",
}
# One file per paper setting (plus the CPU presets); each is also a preset name.
SETTINGS = (
    "svhn-250-convnet13",
    "svhn-500-convnet13",
    "svhn-1000-convnet13",
    "svhn-500-extra-convnet13",
    "cifar10-1000-convnet13",
    "cifar10-2000-convnet13",
    "cifar10-4000-convnet13",
    "cifar10-4000-shakeshake26",
    "svhn-1000-wrn28-2",
    "cifar10-4000-wrn28-2",
    "digits-cpu",
    "fmnist-cpu",
)
# Training images of each data set (official training split), for the M/N rule and epoch lengths.
TRAIN_IMAGES = {"cifar10": 50_000, "svhn": 73_257, "fashion_mnist": 60_000}
SVHN_EXTRA = 531_131


@functools.cache
def train_images(dataset: str) -> int:
    if dataset == "digits":
        from ssl_toolkit.data.sources import load_dataset

        return len(load_dataset("digits", None).y_train)
    return TRAIN_IMAGES[dataset]


def data_context(config) -> DataContext:
    """The context the trainer would build for this config (split sizes from the official counts)."""
    pool = train_images(config.dataset) - config.val_size + (SVHN_EXTRA if config.svhn_extra else 0)
    return DataContext(
        num_classes=10,
        pool_size=pool,
        total_steps=config.steps,
        labeled_share=config.labeled_batch_size / config.batch_size,
    )


def raw_file(stem: str) -> dict:
    """A preset file as written (no loader involved)."""
    return yaml.safe_load((PRESET_DIR / f"{stem}.yaml").read_text())


def expected_values(setting: str, algo: str) -> dict:
    """What a run of ``algo`` gets from ``setting``: base config < setting config < section config."""
    raw = raw_file(setting)
    layers = [raw_file(raw["extends"])["config"]] if raw.get("extends") else []
    layers += [raw.get("config") or {}, (((raw.get("algorithms") or {}).get(algo) or {}).get("config") or {})]
    values: dict = {"hparams": {}}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if k != "hparams"})
        values["hparams"].update(layer.get("hparams") or {})
    return values


def test_the_shipped_presets_are_the_paper_rows_their_settings_and_the_cpu_presets():
    assert PRESETS == sorted({*EXPECTED, *SETTINGS})
    assert sorted(n for n, p in ALL_PRESETS.items() if p.algo is None) == sorted(SETTINGS)
    for name, preset in ALL_PRESETS.items():
        assert preset.name == name
        if preset.algo is not None:  # <short>-<setting>: one algorithm's section of a setting file
            short = name.split("-")[0]
            assert (SHORT[short], name) == (preset.algo, f"{short}-{preset.setting}")
    assert get_preset("mt-cifar10-4000-convnet13").values(None)["algo"] == "mean_teacher"
    assert "algo" not in get_preset("cifar10-4000-convnet13").values("pi_model")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_resolves_and_its_values_reach_the_run_config(name):
    preset = get_preset(name)
    config = resolve_run_config({"preset": name})
    assert config.preset == name
    assert config.algo == (preset.algo or "mean_teacher")
    values = {"hparams": {}, **preset.values(config.algo)}
    assert values == {**expected_values(preset.setting, config.algo), **({"algo": preset.algo} if preset.algo else {})}
    for key, value in values.items():
        if key != "hparams":
            assert getattr(config, key) == value, key  # the data set's defaults never override a preset
    assert {k: config.hparams[k] for k in values["hparams"]} == values["hparams"]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_hyperparameters_are_valid_for_its_algorithm(name):
    config = resolve_run_config({"preset": name})
    algorithm = get_algorithm(config.algo)
    hparams = algorithm.Config(**config.hparams)
    hparams.validate(data_context(config))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_describes_its_paper_row_and_quotes_the_published_error(name):
    preset = get_preset(name)
    assert isinstance(preset.description, str) and preset.description.strip()
    if preset.algo is None:  # a setting, or a CPU preset: no single paper row
        assert preset.paper_row is None and preset.published_error is None
        assert EXPECTED.get(name, "—") == "—"
        return
    assert preset.published_error == EXPECTED[name]
    assert isinstance(preset.paper_row, str) and preset.paper_row.strip()


@pytest.mark.parametrize("name", PRESETS)
def test_command_line_values_override_the_preset(name):
    preset_config = resolve_run_config({"preset": name})
    preset_steps = preset_config.steps
    hparams_override = {} if preset_config.algo == "supervised" else {"consistency": "kl"}
    overrides = {"steps": 2 * preset_steps, "seed": 3, "eval_every": 123, "lr": 0.5, "hparams": hparams_override}
    config = resolve_run_config({"preset": name, **overrides})
    assert (config.steps, config.seed, config.eval_every, config.lr) == (2 * preset_steps, 3, 123, 0.5)
    for key, value in (get_preset(name).values(config.algo).get("hparams") or {}).items():
        assert config.hparams[key] == hparams_override.get(key, value)  # the other hyperparameters stay


@pytest.mark.parametrize("name", ["digits-cpu", "fmnist-cpu"])
def test_cpu_presets_take_any_step_count_and_any_algorithm(name):
    assert resolve_run_config({"preset": name, "steps": 7}).steps == 7
    for algo in ALGORITHMS:
        config = resolve_run_config({"preset": name, "algo": algo})
        get_algorithm(algo).Config(**config.hparams).validate(data_context(config))


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_setting_file_serves_every_algorithm_through_its_sections(setting):
    sections = raw_file(setting).get("algorithms") or {}
    for algo in ALGORITHMS:
        config = resolve_run_config({"preset": setting, "algo": algo})
        assert (config.preset, config.algo) == (setting, algo)
        values = expected_values(setting, algo)  # without a section: the shared values only
        for key, value in values.items():
            if key != "hparams":
                assert getattr(config, key) == value, (algo, key)
        assert {k: config.hparams[k] for k in values["hparams"]} == values["hparams"], algo
        short = (sections.get(algo) or {}).get("short")
        if short:  # --preset SETTING --algo X is the same run as --preset <short>-SETTING
            row = resolve_run_config({"preset": f"{short}-{setting}"})
            assert dataclasses.asdict(config) == {**dataclasses.asdict(row), "preset": setting}, algo


def test_a_base_files_values_reach_the_settings_that_extend_it_and_a_setting_overrides_its_base():
    bases = sorted(path.stem for path in PRESET_DIR.glob("_*.yaml"))
    assert bases and not set(bases) & set(ALL_PRESETS), "base files are never presets"
    for base in bases:
        base_config = raw_file(base)["config"]
        extending = [s for s in SETTINGS if raw_file(s).get("extends") == base]
        assert len(extending) >= 2, f"{base} should be shared"
        for setting in extending:
            raw = raw_file(setting)
            sections = raw.get("algorithms") or {}
            for algo in ALGORITHMS:
                config = resolve_run_config({"preset": setting, "algo": algo})
                section_config = (sections.get(algo) or {}).get("config") or {}
                for key, value in base_config.items():
                    expected = section_config.get(key, (raw.get("config") or {}).get(key, value))
                    assert getattr(config, key) == expected, (setting, algo, key)


def test_extends_layers_base_setting_and_section_in_that_order(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "_base.yaml").write_text(
        "description: shared\nconfig:\n  dataset: digits\n  lr: 0.001\n  steps: 10\n  eval_every: 5\n"
        "  hparams:\n    consistency: kl\n    consistency_weight: 2.0\n"
    )
    (folder / "child.yaml").write_text(
        "description: a setting\nextends: _base\nconfig:\n  steps: 20\n  hparams:\n    consistency_weight: 3.0\n"
        "algorithms:\n  mean_teacher:\n    short: mt\n    config:\n      eval_every: 2\n"
        "      hparams:\n        ema_decay: 0.95\n"
    )
    monkeypatch.setattr(presets_module, "PRESET_DIR", folder)
    assert sorted(list_presets()) == ["child", "mt-child"]
    mean_teacher = resolve_run_config({"preset": "mt-child"})
    assert (mean_teacher.algo, mean_teacher.lr, mean_teacher.steps, mean_teacher.eval_every) == (
        "mean_teacher",
        0.001,
        20,
        2,
    )  # lr from the base, steps from the setting, eval_every from the section
    assert {k: mean_teacher.hparams[k] for k in ("consistency", "consistency_weight", "ema_decay")} == {
        "consistency": "kl",
        "consistency_weight": 3.0,
        "ema_decay": 0.95,
    }
    pi_model = resolve_run_config({"preset": "child", "algo": "pi_model"})  # no section: base and setting only
    assert (pi_model.lr, pi_model.steps, pi_model.eval_every) == (0.001, 20, 5)
    assert (pi_model.hparams["consistency"], pi_model.hparams["consistency_weight"]) == ("kl", 3.0)


def test_convnet_rows_use_the_papers_maximum_consistency_weight():
    for name, preset in ALL_PRESETS.items():
        if not preset.setting.endswith("convnet13") or preset.algo in (None, "supervised"):
            continue
        config = resolve_run_config({"preset": name})
        context = data_context(config)
        weight = get_algorithm(config.algo).Config(**config.hparams).max_weight(context)
        if config.algo == "temporal_ensembling":  # Laine & Aila: 30 * M / N, N = all training images
            expected = 30.0 * config.labels / TRAIN_IMAGES[config.dataset]
        elif config.dataset == "svhn":  # MT svhn_final_eval.py: 1.0 with 1 labeled image per batch
            expected = 1.0
        else:  # MT cifar10_final_eval.py: 100 * n_labeled / 50000
            expected = 100.0 * config.labels / 50_000
        assert weight == pytest.approx(expected, rel=1e-6), name


def test_resnet_row_converts_the_original_epochs_to_steps():
    config = resolve_run_config({"preset": "mt-cifar10-4000-shakeshake26"})
    epoch = (50_000 - 4000) // (512 - 124)  # the original's epoch: unlabeled-only images / unlabeled per batch
    assert (config.batch_size, config.labeled_batch_size, config.lr) == (512, 124, 0.2)
    assert (config.optimizer, config.nesterov, config.weight_decay) == ("sgd", True, 2e-4)
    assert (config.lr_schedule, config.lr_rampup) == ("cosine", 0)
    assert (config.steps, config.lr_rampdown) == (300 * epoch, 350 * epoch)
    assert config.hparams["consistency_rampup"] == 5 * epoch
    assert config.hparams["consistency_weight"] == 100.0


def test_temporal_ensembling_rows_train_300_epochs_of_the_unlabeled_stream():
    rows = [name for name, preset in ALL_PRESETS.items() if preset.algo == "temporal_ensembling"]
    assert rows
    for name in rows:
        config = resolve_run_config({"preset": name})
        epoch = TRAIN_IMAGES[config.dataset] // (config.batch_size - config.labeled_batch_size)
        assert (config.steps, config.lr_rampup, config.lr_rampdown) == (300 * epoch, 80 * epoch, 50 * epoch), name
        assert config.hparams["consistency_rampup"] == 80 * epoch, name


def test_every_preset_backbone_is_registered_by_importing_the_backbones_package():
    # A fresh interpreter: what `ssl-bench run` sees, whatever other tests have imported here.
    backbones = sorted({get_preset(name).values(None)["backbone"] for name in PRESETS})
    code = (
        "import sys, timm, ssl_toolkit.backbones\n"
        "missing = [b for b in sys.argv[1:] if not timm.is_model(b)]\n"
        "print(' '.join(missing))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *backbones],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"backbones not registered by ssl_toolkit.backbones: {result.stdout.strip()}"


def test_reproducing_doc_lists_every_preset_with_its_published_error():
    text = (REPO / "docs" / "reproducing.md").read_text()
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split("|")[1].strip().strip("`"), []).append(line)
    assert sorted(rows) == PRESETS  # every name --preset accepts, and no other
    for name in EXPECTED:
        published, command = f"| {EXPECTED[name]} |", f"ssl-bench run --preset {name}"
        assert any(published in line and command in line for line in rows[name]), name


def test_algorithm_specific_preset_hyperparameters_apply_only_to_that_algorithm():
    mean_teacher = resolve_run_config({"preset": "digits-cpu", "algo": "mean_teacher"})
    assert mean_teacher.hparams["ema_decay_after_rampup"] is None
    pi_model = resolve_run_config({"preset": "digits-cpu", "algo": "pi_model"})
    assert "ema_decay_after_rampup" not in pi_model.hparams
    overridden = resolve_run_config(
        {"preset": "digits-cpu", "algo": "mean_teacher", "hparams": {"ema_decay_after_rampup": 0.999}}
    )
    assert overridden.hparams["ema_decay_after_rampup"] == 0.999


def test_a_data_set_with_a_default_preset_uses_it_unless_another_is_named():
    assert resolve_run_config({"dataset": "digits"}).preset == "digits-cpu"
    assert resolve_run_config({"dataset": "fashion_mnist"}).preset == "fmnist-cpu"
    assert resolve_run_config({"dataset": "cifar10"}).preset is None
