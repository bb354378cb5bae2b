"""Shipped presets: each resolves, its hyperparameters fit its algorithm, the command line wins, and
its published number is the one the papers report (typed in here from ../shared/REFERENCE.md and the
Mean Teacher paper's Table 3, independently of the YAML files)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssl_toolkit.algorithm import DataContext
from ssl_toolkit.config import PRESET_DIR, PRESET_METADATA, list_presets, load_preset, resolve_run_config
from ssl_toolkit.registry import get_algorithm

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(list_presets())

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
        num_labeled=config.labels,
        num_unlabeled=pool,
        pool_size=pool,
        total_steps=config.steps,
        steps_per_epoch=pool // (config.batch_size - config.labeled_batch_size),
        labeled_share=config.labeled_batch_size / config.batch_size,
    )


def test_the_shipped_presets_are_exactly_the_paper_rows_and_cpu_presets():
    assert PRESETS == sorted(EXPECTED)
    assert load_preset("mt-cifar10-4000-convnet13")["algo"] == "mean_teacher"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_resolves_and_its_values_reach_the_run_config(name):
    raw = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    config = resolve_run_config({"preset": name})
    assert config.preset == name
    for key, value in raw.items():
        if key in PRESET_METADATA or key in ("hparams", "algo_hparams"):
            continue
        assert getattr(config, key) == value, key  # the data set's defaults never override a preset
    assert {k: config.hparams[k] for k in raw.get("hparams") or {}} == (raw.get("hparams") or {})
    for key, value in ((raw.get("algo_hparams") or {}).get(config.algo) or {}).items():
        assert config.hparams[key] == value, key


@pytest.mark.parametrize("name", PRESETS)
def test_preset_hyperparameters_are_valid_for_its_algorithm(name):
    config = resolve_run_config({"preset": name})
    algorithm = get_algorithm(config.algo)
    hparams = algorithm.Config(**config.hparams)
    hparams.validate(data_context(config))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_describes_its_paper_row_and_quotes_the_published_error(name):
    raw = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    assert raw["published_error"] == EXPECTED[name]
    assert isinstance(raw["description"], str) and raw["description"].strip()
    assert isinstance(raw["paper_row"], str) and raw["paper_row"].strip()


@pytest.mark.parametrize("name", PRESETS)
def test_command_line_values_override_the_preset(name):
    preset_steps = load_preset(name)["steps"]
    hparams_override = {} if load_preset(name).get("algo") == "supervised" else {"consistency": "kl"}
    overrides = {"steps": 2 * preset_steps, "seed": 3, "eval_every": 123, "lr": 0.5, "hparams": hparams_override}
    config = resolve_run_config({"preset": name, **overrides})
    assert (config.steps, config.seed, config.eval_every, config.lr) == (2 * preset_steps, 3, 123, 0.5)
    for key, value in (load_preset(name).get("hparams") or {}).items():
        assert config.hparams[key] == hparams_override.get(key, value)  # the other hyperparameters stay


@pytest.mark.parametrize("name", ["digits-cpu", "fmnist-cpu"])
def test_cpu_presets_take_any_step_count_and_any_algorithm(name):
    assert resolve_run_config({"preset": name, "steps": 7}).steps == 7
    for algo in ("supervised", "pi_model", "temporal_ensembling", "mean_teacher"):
        config = resolve_run_config({"preset": name, "algo": algo})
        get_algorithm(algo).Config(**config.hparams).validate(data_context(config))


def test_convnet_rows_use_the_papers_maximum_consistency_weight():
    for name in PRESETS:
        if not name.endswith("convnet13") or name.startswith("sup-"):
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
    for name in PRESETS:
        if not name.startswith("te-"):
            continue
        config = resolve_run_config({"preset": name})
        epoch = TRAIN_IMAGES[config.dataset] // (config.batch_size - config.labeled_batch_size)
        assert (config.steps, config.lr_rampup, config.lr_rampdown) == (300 * epoch, 80 * epoch, 50 * epoch), name
        assert config.hparams["consistency_rampup"] == 80 * epoch, name


def test_every_preset_backbone_is_registered_by_importing_the_backbones_package():
    # A fresh interpreter: what `ssl-bench run` sees, whatever other tests have imported here.
    backbones = sorted({load_preset(name)["backbone"] for name in PRESETS})
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
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    assert sorted(rows) == PRESETS
    for name, line in rows.items():
        assert f"| {EXPECTED[name]} |" in line, name
        assert f"ssl-bench run --preset {name}" in line, name


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
