"""The bad-input catalogue: every mistake costs one clear line and exit code 2, and changes no file.

Each case builds its inputs inside ``tmp_path`` (the working directory during the call, so a
default ``runs/`` folder would land there too), snapshots every byte under it, calls the CLI
in-process and checks: exit code 2, exactly one line on stderr that names the bad value and what is
valid, no traceback, nothing on stdout, and the snapshot unchanged (no folder created, no file
written, overwritten or removed). A few cases also run as real subprocesses.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from official_format_files import idx_bytes, write_mnist

from ssl_toolkit.cli import main
from ssl_toolkit.config import RunConfig
from ssl_toolkit.registry import get_algorithm, list_algorithms
from ssl_toolkit.settings import settings_of

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--dataset", "digits", "--labels", "20", "--steps", "6", "--eval-every", "3", "--batch-size", "32",
    "--labeled-batch-size", "8", "--val-size", "50", "--threads", "1", "--quiet",
]


def run(tmp: Path, *extra: str, algo: str = "mean_teacher", out: str = "run") -> list[str]:
    return ["run", "--algo", algo, *SMALL, "--out", str(tmp / out), *extra]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) under ``root``."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Finished 6-step runs to resume or to take checkpoints from."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, algo, extra in (
        ("mt", "mean_teacher", []),
        ("sup", "supervised", []),
        ("mt_seed1", "mean_teacher", ["--seed", "1"]),
    ):
        assert main(["run", "--algo", algo, *SMALL, "--out", str(root / name), *extra]) == 0
        made[name] = root / name
    return made


# ---------------------------------------------------------------------------------- case builders
# Each takes (tmp_path, runs) and returns the argv; files it needs are written into tmp_path.

Builder = Callable[[Path, dict], list[str]]


def config_file(text: str, *extra: str) -> Builder:
    def build(tmp: Path, runs: dict) -> list[str]:
        (tmp / "cfg.yaml").write_text(text)
        return run(tmp, "--config", str(tmp / "cfg.yaml"), *extra)

    return build


def flags(*extra: str, algo: str = "mean_teacher") -> Builder:
    return lambda tmp, runs: run(tmp, *extra, algo=algo)


def npz_case(mutate: Callable[[dict], None], *extra: str) -> Builder:
    """A valid npz data set (see test_the_npz_control_run_succeeds), changed by ``mutate``."""

    def build(tmp: Path, runs: dict) -> list[str]:
        arrays = valid_npz_arrays()
        mutate(arrays)
        np.savez(tmp / "data.npz", **arrays)
        return [*npz_argv(tmp), *extra]

    return build


def valid_npz_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (60, 1, 8, 8), dtype=np.uint8),
        "y_train": np.arange(60) % 3,
        "x_test": rng.integers(0, 256, (9, 1, 8, 8), dtype=np.uint8),
        "y_test": np.arange(9) % 3,
    }


def npz_argv(tmp: Path) -> list[str]:
    return [
        "run", "--algo", "mean_teacher", "--dataset", "npz", "--data-dir", str(tmp / "data.npz"), "--labels", "6",
        "--steps", "2", "--eval-every", "2", "--batch-size", "16", "--labeled-batch-size", "4", "--val-size", "6",
        "--backbone", "convnet_tiny", "--threads", "1", "--quiet", "--out", str(tmp / "run"),
    ]


def truncated_npz(tmp: Path, runs: dict) -> list[str]:
    np.savez(tmp / "data.npz", **valid_npz_arrays())
    data = (tmp / "data.npz").read_bytes()
    (tmp / "data.npz").write_bytes(data[: len(data) // 2])
    return npz_argv(tmp)


def mnist_case(change: Callable[[Path], None]) -> Builder:
    def build(tmp: Path, runs: dict) -> list[str]:
        write_mnist(tmp / "mnist", gz=False, n_train=40, n_test=3)
        change(tmp / "mnist")
        return [
            "run", "--dataset", "mnist", "--data-dir", str(tmp / "mnist"), "--labels", "10", "--val-size", "0",
            "--steps", "2", "--batch-size", "16", "--labeled-batch-size", "4", "--threads", "1", "--quiet",
            "--out", str(tmp / "run"),
        ]

    return build


def remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def truncate(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:-100])


def replace_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def resume_copy(source: str, change: Callable[[Path, dict], None] = lambda run, runs: None, *extra: str) -> Builder:
    """``--resume`` of a copy of finished run ``source`` (extended to 9 steps), after ``change``."""

    def build(tmp: Path, runs: dict) -> list[str]:
        shutil.copytree(runs[source], tmp / "run")
        change(tmp / "run", runs)
        return run(tmp, "--steps", "9", "--resume", *extra)

    return build


def checkpoint_bytes(data: bytes) -> Callable[[Path, dict], None]:
    return lambda folder, runs: (folder / "checkpoint.pt").write_bytes(data)


def checkpoint_from(other: str) -> Callable[[Path, dict], None]:
    return lambda folder, runs: shutil.copy(runs[other] / "checkpoint.pt", folder / "checkpoint.pt")


def checkpoint_edit(edit: Callable[[dict], object]) -> Callable[[Path, dict], None]:
    def change(folder: Path, runs: dict) -> None:
        state = torch.load(folder / "checkpoint.pt", weights_only=True)
        torch.save(edit(state), folder / "checkpoint.pt")

    return change


def set_key(key: str, value: object) -> Callable[[dict], dict]:
    def edit(state: dict) -> dict:
        state[key] = value
        return state

    return edit


def existing_run(*extra: str) -> Builder:
    """A finished run in --out, started again without --resume: it must stay byte-identical."""

    def build(tmp: Path, runs: dict) -> list[str]:
        shutil.copytree(runs["mt"], tmp / "run")
        return run(tmp, *extra)

    return build


def folder_with(files: dict[str, str], *extra: str) -> Builder:
    def build(tmp: Path, runs: dict) -> list[str]:
        (tmp / "run").mkdir()
        for name, text in files.items():
            (tmp / "run" / name).write_text(text)
        return run(tmp, *extra)

    return build


def out_is_a_file(tmp: Path, runs: dict) -> list[str]:
    (tmp / "run").write_text("not a folder")
    return run(tmp)


def resume_command(target: str, *extra: str) -> Builder:
    def build(tmp: Path, runs: dict) -> list[str]:
        if target == "copy":
            shutil.copytree(runs["mt"], tmp / "run")
        return ["resume", str(tmp / "run"), "--quiet", *extra]

    return build


# --------------------------------------------------------------------------------------- the catalogue
# (id, builder, substrings the one stderr line must contain: the bad value and what is valid)

CATALOGUE: list[tuple[str, Builder, tuple[str, ...]]] = [
    # command-line flags
    ("unknown-flag", flags("--stepz", "5"), ("--stepz",)),
    ("steps-not-an-integer", flags("--steps", "ten"), ("--steps", "'ten'", "int")),
    ("steps-zero", flags("--steps", "0"), ("--steps 0", "positive integer")),
    ("steps-negative", flags("--steps=-5"), ("--steps -5", "positive integer")),
    ("batch-size-zero", flags("--batch-size", "0"), ("--batch-size 0", "positive integer")),
    ("labeled-batch-not-smaller", flags("--labeled-batch-size", "32"), ("--labeled-batch-size 32", "valid: 1..31")),
    ("batch-larger-than-pool", flags("--batch-size", "5000"), ("--batch-size 5000", "valid: --batch-size up to")),
    ("unknown-algorithm", flags(algo="mean_teachr"), ("'mean_teachr'", "valid:", "mean_teacher")),
    ("unknown-dataset", flags("--dataset", "cifar11"), ("'cifar11'", "valid:", "cifar10")),
    ("unknown-backbone", flags("--backbone", "resnet_nope"), ("'resnet_nope'", "valid:", "convnet_tiny")),
    ("unknown-optimizer", flags("--optimizer", "adamw"), ("'adamw'", "valid: adam, sgd")),
    ("unknown-lr-schedule", flags("--lr-schedule", "step"), ("'step'", "valid: ramp, cosine")),
    ("unknown-device", flags("--device", "tpu"), ("'tpu'", "valid: auto, cpu, cuda")),
    ("lr-zero", flags("--lr", "0"), ("--lr 0", "a positive number")),
    ("lr-negative", flags("--lr=-0.1"), ("--lr -0.1", "positive")),
    ("weight-decay-negative", flags("--weight-decay=-1e-4"), ("--weight-decay -0.0001", ">= 0")),
    ("noise-negative", flags("--noise=-0.5"), ("--noise -0.5", ">= 0")),
    ("translate-negative", flags("--translate=-2"), ("--translate -2", ">= 0")),
    ("threads-zero", flags("--threads", "0"), ("--threads 0", "positive integer")),
    ("eval-every-zero", flags("--eval-every", "0"), ("--eval-every 0", "positive integer")),
    ("checkpoint-every-zero", flags("--checkpoint-every", "0"), ("--checkpoint-every 0", "positive integer")),
    ("labels-fewer-than-classes", flags("--labels", "5"), ("--labels 5", "valid: 10..")),
    ("labels-more-than-images", flags("--labels", "5000"), ("--labels 5000", "valid: 10..")),
    ("val-size-too-large", flags("--val-size", "5000"), ("--val-size 5000", "valid: 0..")),
    ("unlabeled-pool-below-labels", flags("--unlabeled-pool", "5"), ("--unlabeled-pool 5", "valid: ")),
    ("set-without-equals", flags("--set", "ema_decay"), ("'ema_decay'", "KEY=VALUE")),
    ("set-unknown-key", flags("--set", "ema_dacay=0.9"), ("'ema_dacay'", "valid:", "ema_decay")),
    ("set-wrong-type", flags("--set", "ema_decay=fast"), ("ema_decay='fast'", "expected float")),
    ("set-key-the-algorithm-lacks", flags("--set", "consistency_weight=10", algo="supervised"),
     ("hyperparameters of supervised", "'consistency_weight'", "valid: none")),
    ("unknown-preset", flags("--preset", "nope"), ("'nope'", "valid:", "digits-cpu")),
    ("missing-plugin", flags("--plugin", "no_such_module_xyz"), ("'no_such_module_xyz'", "not found")),
    ("resume-and-overwrite", flags("--resume", "--overwrite"), ("--resume and --overwrite",)),
    # hyperparameter ranges
    ("ema-decay-one", flags("--set", "ema_decay=1.0"), ("ema_decay=1.0", "valid: [0.0, 1.0)")),
    ("ema-decay-negative", flags("--set", "ema_decay=-0.1"), ("ema_decay=-0.1", "valid: [0.0, 1.0)")),
    ("ema-decay-after-rampup-above-one", flags("--set", "ema_decay_after_rampup=1.5"),
     ("ema_decay_after_rampup=1.5", "valid: [0.0, 1.0)")),
    ("consistency-weight-negative", flags("--set", "consistency_weight=-1"),
     ("consistency_weight=-1", "valid: >= 0.0")),
    ("label-fraction-scale-negative", flags("--set", "label_fraction_scale=-5"),
     ("label_fraction_scale=-5", "valid: >= 0.0")),
    ("rampup-longer-than-run", flags("--set", "consistency_rampup=100"), ("consistency_rampup=100", "valid: [0, 6]")),
    ("unknown-consistency", flags("--set", "consistency=l1"), ("consistency='l1'", "valid: mse, kl")),
    ("ensemble-momentum-one", flags("--set", "ensemble_momentum=1.0", algo="temporal_ensembling"),
     ("ensemble_momentum=1.0", "valid: [0.0, 1.0)")),
    ("pi-model-negative-weight", flags("--set", "consistency_weight=-3", algo="pi_model"),
     ("consistency_weight=-3", "valid: >= 0.0")),
    # config-file keys, types and ranges
    ("config-file-missing", lambda tmp, runs: run(tmp, "--config", str(tmp / "absent.yaml")),
     ("absent.yaml", "cannot read")),
    ("config-not-yaml", config_file("steps: [1, 2\n"), ("cfg.yaml", "not valid JSON or YAML")),
    ("config-not-a-mapping", config_file("- 1\n- 2\n"), ("cfg.yaml", "expected a mapping", "list")),
    ("config-unknown-key", config_file("stepz: 5\n"), ("'stepz'", "valid:", "steps")),
    ("config-wrong-type", config_file("batch_size: ten\n"), ("batch_size='ten'", "expected int")),
    ("config-bool-for-int", config_file("eval_every: true\n"), ("eval_every=True", "expected int")),
    ("config-float-for-int", config_file("labeled_batch_size: 7.5\n"), ("labeled_batch_size=7.5", "expected int")),
    ("config-hparams-not-mapping", config_file("hparams: 5\n"), ("hparams", "mapping")),
    ("config-hparam-wrong-type", config_file("hparams: {ema_decay: fast}\n"), ("ema_decay='fast'", "expected float")),
    ("config-beta1-one", config_file("beta1: 1.0\n"), ("beta1=1.0", "valid: [0.0, 1.0)")),
    ("config-lr-rampup-longer-than-run", config_file("lr_rampup: 100\n"), ("--lr-rampup 100", "0..6")),
    ("config-momentum-negative", config_file("momentum: -0.5\n"), ("momentum=-0.5", "valid: [0.0, 1.0)")),
    # data files: npz
    ("npz-missing", lambda tmp, runs: npz_argv(tmp), ("data.npz", "not found", "x_train")),
    ("npz-truncated", truncated_npz, ("data.npz", "not a readable .npz")),
    ("npz-images-without-pixels", npz_case(lambda a: a.update(x_train=np.zeros((60, 64), np.uint8))),
     ("x_train", "(60, 64)", "(N, H, W)")),
    ("npz-negative-label", npz_case(lambda a: a["y_train"].__setitem__(5, -1)), ("negative label -1", "0..")),
    ("npz-label-count-mismatch", npz_case(lambda a: a.update(y_train=a["y_train"][:50])), ("y_train", "(60,)")),
    ("npz-missing-key", npz_case(lambda a: a.pop("y_test")), ("missing ['y_test']", "x_train, y_train")),
    ("npz-float-images-out-of-range", npz_case(lambda a: a.update(x_train=a["x_train"].astype(np.float32))),
     ("x_train", "float32", "[0, 1]")),
    ("npz-labels-beyond-class-names", npz_case(lambda a: a.update(class_names=np.array(["a", "b"]))),
     ("labels reach 2", "0..1")),
    # data files: MNIST IDX
    ("mnist-file-missing", mnist_case(remove("t10k-labels-idx1-ubyte")), ("t10k-labels",)),
    ("mnist-truncated", mnist_case(truncate("train-images-idx3-ubyte")), ("train-images-idx3-ubyte", "truncated")),
    ("mnist-wrong-magic", mnist_case(replace_bytes("train-labels-idx1-ubyte", b"\x12\x34\x56\x78" + bytes(40))),
     ("train-labels-idx1-ubyte", "12345678", "expected 0000TTDD")),
    ("mnist-label-out-of-range", mnist_case(replace_bytes("t10k-labels-idx1-ubyte", idx_bytes(
        np.array([1, 12, 3], np.uint8)))), ("t10k-labels-idx1-ubyte", "[0, 9]", "12")),
    ("mnist-label-count-mismatch", mnist_case(replace_bytes("train-labels-idx1-ubyte", idx_bytes(
        np.zeros(39, np.uint8)))), ("train-labels-idx1-ubyte", "expected 40 labels")),
    ("mnist-images-wrong-rank", mnist_case(replace_bytes("train-images-idx3-ubyte", idx_bytes(
        np.zeros((40, 784), np.uint8)))), ("train-images-idx3-ubyte", "3 dimensions", "found uint8 in 2")),
    ("mnist-gzip-corrupt", mnist_case(replace_bytes("train-images-idx3-ubyte", gzip.compress(bytes(100))[:15])),
     ("train-images-idx3-ubyte", "cannot decompress")),
    # run folders
    ("existing-run-without-resume", existing_run(), ("already exists", "--resume", "--overwrite", "another --out")),
    ("overwrite-a-folder-that-is-not-a-run", folder_with({"notes.txt": "mine"}, "--overwrite"),
     ("not a run folder", "refusing to delete")),
    ("overwrite-with-a-bad-hyperparameter", existing_run("--overwrite", "--set", "ema_decay=2"),
     ("ema_decay=2", "valid: [0.0, 1.0)")),
    ("out-is-a-file", out_is_a_file, ("is a file", "another --out")),
    ("resume-without-a-run", flags("--resume"), ("--resume", "no config.json", "without --resume")),
    ("resume-with-changed-flags", resume_copy("mt", lambda run, runs: None, "--set", "ema_decay=0.9"),
     ("hparams.ema_decay", "same flags", "another --out")),
    ("resume-without-checkpoint", resume_copy("mt", lambda run, runs: (run / "checkpoint.pt").unlink()),
     ("no checkpoint", "--overwrite")),
    ("resume-unreadable-config-json", resume_copy("mt", lambda run, runs: (run / "config.json").write_text("{")),
     ("config.json", "not valid JSON or YAML")),
    ("resume-command-on-nothing", resume_command("absent"), ("no config.json",)),
    ("resume-command-steps-below-checkpoint", resume_command("copy", "--steps", "3"),
     ("step 6", "--steps 3", "valid: --steps 6 or more")),
    # checkpoints
    ("checkpoint-truncated", resume_copy("mt", lambda run, runs: truncate("checkpoint.pt")(run)),
     ("checkpoint.pt", "cannot be loaded safely")),
    ("checkpoint-random-bytes", resume_copy("mt", checkpoint_bytes(bytes(range(256)) * 8)),
     ("checkpoint.pt", "cannot be loaded safely")),
    ("checkpoint-empty", resume_copy("mt", checkpoint_bytes(b"")), ("checkpoint.pt", "cannot be loaded safely")),
    ("checkpoint-from-another-algorithm", resume_copy("mt", checkpoint_from("sup")),
     ("algorithm 'supervised'", "not 'mean_teacher'")),
    ("checkpoint-from-another-config", resume_copy("mt", checkpoint_from("mt_seed1")),
     ("checkpoint.pt", "differs in seed")),
    ("checkpoint-not-a-dict", resume_copy("mt", checkpoint_edit(lambda state: torch.zeros(3))),
     ("not an ssl-bench checkpoint", "missing")),
    ("checkpoint-missing-optimizer", resume_copy("mt", checkpoint_edit(lambda s: {k: v for k, v in s.items()
                                                                                 if k != "optimizer"})),
     ("missing optimizer",)),
    ("checkpoint-future-format", resume_copy("mt", checkpoint_edit(set_key("format", 99))),
     ("format 99", "format 1")),
    ("checkpoint-weights-of-another-model", resume_copy("mt", checkpoint_edit(
        lambda s: {**s, "algorithm": {k: v[..., :1] if v.ndim else v for k, v in s["algorithm"].items()}})),
     ("checkpoint.pt", "does not fit this run", "size mismatch")),
]


def _numeric_cases() -> list[tuple[str, Builder, tuple[str, ...]]]:
    """Non-finite values for every numeric run flag and every numeric hyperparameter of every
    algorithm, and out-of-range seeds: each must be a one-line error, never a traceback from torch."""
    cases: list[tuple[str, Builder, tuple[str, ...]]] = []
    for info in settings_of(RunConfig):
        if info.base_type not in (int, float):
            continue
        for text in ("nan", "inf", "-inf"):
            # An integer flag refuses these as not an integer; a float flag as not finite.
            expected = (info.flag_name, "int") if info.base_type is int else (info.flag_name, "not a finite number")
            cases.append((f"{info.name}-{text}", flags(f"{info.flag_name}={text}"), expected))
    for algo in list_algorithms():
        for info in settings_of(get_algorithm(algo).Config):
            if info.base_type is float:
                for text in (".nan", ".inf"):
                    cases.append((f"{algo}-{info.name}-{text}", flags("--set", f"{info.name}={text}", algo=algo),
                                  (info.name, "not a finite number")))
    cases += [
        ("seed-negative", flags("--seed=-1"), ("--seed -1", "valid: [0, 4294967295]")),
        ("seed-too-large", flags("--seed", str(2**32)), ("--seed 4294967296", "valid: [0, 4294967295]")),
        ("config-seed-nan", config_file("seed: .nan\n"), ("seed=nan", "expected int")),
        ("config-lr-inf", config_file("lr: .inf\n"), ("lr=inf", "not a finite number")),
        ("abbreviated-flag", flags("--step", "300"), ("--step",)),
        ("model-does-not-fit-the-images", npz_case(lambda a: None, "--backbone", "convnet13"),
         ("convnet13", "(8, 8)")),
    ]
    return cases


CATALOGUE += _numeric_cases()


def test_the_catalogue_has_at_least_40_bad_inputs():
    assert len(CATALOGUE) >= 40
    assert len({case[0] for case in CATALOGUE}) == len(CATALOGUE), "case ids are unique"


@pytest.mark.parametrize("build, expected", [pytest.param(b, e, id=i) for i, b, e in CATALOGUE])
def test_bad_input_exits_2_with_one_line_and_changes_no_file(
    build, expected, tmp_path, runs, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv = build(tmp_path, runs)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    for part in expected:
        assert part in lines[0], f"{part!r} not in: {lines[0]}"
    assert captured.out == ""
    assert snapshot(tmp_path) == before, "a refused input wrote, changed or removed a file"


def test_the_npz_control_run_succeeds(tmp_path, capsys):
    # The npz cases differ from this valid file in one way each, so their error is that difference.
    np.savez(tmp_path / "data.npz", **valid_npz_arrays())
    assert main(npz_argv(tmp_path)) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "final.json").exists()


def test_the_mnist_control_run_succeeds(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = mnist_case(lambda folder: None)(tmp_path, {})
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "final.json").exists()


def test_the_resume_control_succeeds(tmp_path, runs, capsys):
    argv = resume_copy("mt")(tmp_path, runs)
    assert main(argv) == 0, capsys.readouterr().err
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 9


def test_bad_inputs_exit_2_end_to_end_in_a_subprocess(tmp_path, runs):
    """The real console script: exit status 2, one stderr line, no traceback, no folder."""
    shutil.copytree(runs["mt"], tmp_path / "corrupt")
    truncate("checkpoint.pt")(tmp_path / "corrupt")
    commands = {
        "flag": run(tmp_path, "--stepz", "5", out="a"),
        "checkpoint": ["resume", str(tmp_path / "corrupt"), "--quiet"],
    }
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = {
        name: subprocess.Popen([sys.executable, "-m", "ssl_toolkit", *argv], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, argv in commands.items()
    }
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 2, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert out == ""
    assert snapshot(tmp_path) == before
