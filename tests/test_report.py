"""The comparison report, built from synthetic run folders written here (no training)."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from ssl_toolkit.cli import main
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.report import build_report
from ssl_toolkit.report.aggregate import baseline_means

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)
LABELS = (50, 500)


def write_run(
    root: Path,
    algo: str,
    labels: int,
    seed: int,
    curve: list[tuple[int, dict[str, float], dict[str, float]]],
    *,
    hparams: dict | None = None,
    dataset: str = "digits",
    wall_time_s: float = 10.0,
    labeled: list[int] | None = None,
    setting_dir: str = "",
    steps: int = 30,
    execution: dict | None = None,
) -> Path:
    """A run folder as `ssl-bench run` writes it; `curve` is [(step, val_error, test_error)].

    `execution` sets execution settings in config.json (threads, device, ...).
    """
    folder = root / f"{dataset}-{labels}" / algo / setting_dir / f"seed{seed}"
    folder.mkdir(parents=True)
    config = {
        "algo": algo,
        "dataset": dataset,
        "labels": labels,
        "seed": seed,
        "steps": steps,
        "backbone": "tiny_cnn",
        "batch_size": 32,
        "labeled_batch_size": 8,
        "lr": 0.003,
        "val_size": 100,
        "eval_every": 10,
        "hparams": hparams or {},
        **(execution or {}),
    }
    (folder / "config.json").write_text(json.dumps(config))
    split = {"name": f"{dataset}.{seed}@{labels}-100", "labeled": labeled or [seed, seed + 7], "val": [1, 2]}
    (folder / "split.json").write_text(json.dumps(split))
    rows = [
        {
            "step": step,
            "class_loss": 1.0,
            "consistency_loss": 0.1,
            "consistency_weight": 1.0,
            "lr": 0.003,
            "val_error": val,
            "test_error": test,
        }
        for step, val, test in curve
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    last_step, last_val, last_test = curve[-1]
    final = {
        "algo": algo,
        "dataset": dataset,
        "labels": labels,
        "seed": seed,
        "steps": last_step,
        "wall_time_s": wall_time_s,
        "test_error": last_test,
        "val_error": last_val,
    }
    (folder / "final.json").write_text(json.dumps(final))
    return folder


def synthetic_curve(algo: str, labels: int, seed: int) -> list[tuple[int, dict[str, float], dict[str, float]]]:
    """Three evaluations where the lowest validation error (step 20) is not the lowest test error."""
    base = 40.0 - labels / 50 - (8.0 if algo == "mean_teacher" else 0.0) + 1.37 * seed
    curve = []
    for step, val_offset, test_offset in ((10, 5.0, 1.0), (20, -3.0, 2.5), (30, 0.5, -2.0)):
        val = {"student": base + val_offset}
        test = {"student": base + test_offset + 0.11 * seed * seed}
        if algo == "mean_teacher":
            val["teacher"] = base + val_offset - 1.5
            test["teacher"] = base + test_offset - 1.0 + 0.2 * seed
        curve.append((step, val, test))
    return curve


@pytest.fixture()
def comparison(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for labels in LABELS:
        for seed in SEEDS:
            for algo in ("supervised", "mean_teacher"):
                hparams = {"ema_decay": 0.99, "consistency_weight": labels / 10} if algo == "mean_teacher" else {}
                write_run(
                    root,
                    algo,
                    labels,
                    seed,
                    synthetic_curve(algo, labels, seed),
                    hparams=hparams,
                    wall_time_s=5.0 + seed + (3.0 if algo == "mean_teacher" else 0.0),
                )
    return root


def row_for(report, selection: str, algo: str, labels: int):
    matches = [r for r in report.rows_for(selection) if r.algo == algo and r.labels == labels]
    assert len(matches) == 1, matches
    return matches[0]


def test_final_model_table_equals_mean_and_std_over_seeds_of_final_json(comparison: Path) -> None:
    report = build_report(comparison)
    csv_rows = list(csv.DictReader((comparison / "results.csv").open()))
    for labels in LABELS:
        expected_gain_base = statistics.mean(synthetic_curve("supervised", labels, s)[-1][2]["student"] for s in SEEDS)
        for algo, models in (("supervised", ["student"]), ("mean_teacher", ["student", "teacher"])):
            row = row_for(report, "final", algo, labels)
            assert list(row.errors) == models
            for model in models:
                finals = [
                    json.loads((comparison / f"digits-{labels}/{algo}/seed{s}/final.json").read_text())["test_error"][
                        model
                    ]
                    for s in SEEDS
                ]
                stat = row.errors[model]
                assert stat.n == 3
                assert stat.mean == pytest.approx(statistics.mean(finals))
                assert stat.std == pytest.approx(statistics.stdev(finals))
                (line,) = [
                    c
                    for c in csv_rows
                    if (c["selection"], c["algorithm"], c["labels"], c["model"]) == ("final", algo, str(labels), model)
                ]
                assert float(line["error_mean"]) == pytest.approx(statistics.mean(finals), abs=1e-4)
                assert float(line["error_std"]) == pytest.approx(statistics.stdev(finals), abs=1e-4)
                assert line["n"] == "3" and line["seeds"] == "0;1;2"
                if algo == "mean_teacher":
                    assert row.gain[model] == pytest.approx(expected_gain_base - statistics.mean(finals))
                    assert float(line["gain_over_supervised"]) == pytest.approx(row.gain[model], abs=1e-4)
            wall = statistics.mean(5.0 + s + (3.0 if algo == "mean_teacher" else 0.0) for s in SEEDS)
            assert row.wall_time_s == pytest.approx(wall)
    text = (comparison / "report.md").read_text()
    mt = row_for(report, "final", "mean_teacher", 50).errors["teacher"]
    assert f"{mt.mean:.2f} ± {mt.std:.2f}" in text


def test_best_validation_takes_test_error_at_lowest_validation_error_not_lowest_test_error(
    comparison: Path,
) -> None:
    report = build_report(comparison)
    for labels in LABELS:
        row = row_for(report, "best_val", "mean_teacher", labels)
        for model in ("student", "teacher"):
            at_min_val, lowest_test = [], []
            for seed in SEEDS:
                curve = synthetic_curve("mean_teacher", labels, seed)
                chosen = min(curve, key=lambda point: point[1][model])
                at_min_val.append(chosen[2][model])
                lowest_test.append(min(point[2][model] for point in curve))
            assert statistics.mean(at_min_val) != pytest.approx(statistics.mean(lowest_test))
            assert row.errors[model].values == pytest.approx(at_min_val)
            assert row.errors[model].mean == pytest.approx(statistics.mean(at_min_val))
        # The best-validation row differs from the final-model row: step 20 is chosen, not step 30.
        assert row.errors["student"].mean != pytest.approx(
            row_for(report, "final", "mean_teacher", labels).errors["student"].mean
        )
    text = (comparison / "report.md").read_text()
    assert "## Final model" in text and "## Best validation" in text


def test_teacher_and_student_are_selected_on_their_own_validation_curves(tmp_path: Path) -> None:
    curve = [
        (10, {"student": 20.0, "teacher": 30.0}, {"student": 21.0, "teacher": 31.0}),
        (20, {"student": 25.0, "teacher": 10.0}, {"student": 26.0, "teacher": 12.0}),
    ]
    write_run(tmp_path, "mean_teacher", 50, 0, curve)
    row = row_for(build_report(tmp_path), "best_val", "mean_teacher", 50)
    assert row.errors["student"].values == [21.0]
    assert row.errors["teacher"].values == [12.0]


def test_report_md_is_byte_identical_across_builds_and_locations(comparison: Path, tmp_path: Path) -> None:
    first = build_report(comparison).markdown
    second = build_report(comparison).markdown
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(comparison, copy, ignore=shutil.ignore_patterns("*.png", "*.md", "*.csv"))
    third = build_report(copy).markdown
    assert first.encode() == second.encode() == third.encode()
    assert (comparison / "report.md").read_bytes() == first.encode()
    assert str(tmp_path) not in first


def test_failed_and_incomplete_runs_appear_as_failed_with_their_error(comparison: Path) -> None:
    broken = comparison / "digits-50" / "pi_model" / "seed0"
    broken.mkdir(parents=True)
    # As compare writes it for a run that stopped before config.json: with the config it asked for.
    (broken / "error.json").write_text(
        json.dumps(
            {
                "error": "error: hyperparameter ema_decay=1.5 is out of range",
                "exit_code": 2,
                "stderr_tail": "error: hyperparameter ema_decay=1.5 is out of range\n",
                "command": ["ssl-bench", "run", "--algo", "pi_model"],
                "setting": {},
                "config": {"algo": "pi_model", "dataset": "digits", "labels": 50, "seed": 0, "backbone": "tiny_cnn"},
            }
        )
    )
    never_started = comparison / "digits-50" / "mean_teacher" / "seed4"
    never_started.mkdir(parents=True)
    requested = {"algo": "mean_teacher", "dataset": "digits", "labels": 50, "seed": 4, "backbone": "tiny_cnn"}
    (never_started / "error.json").write_text(
        json.dumps(
            {
                "error": "RuntimeError: out of memory",
                "exit_code": 1,
                "stderr_tail": "Traceback ...\nRuntimeError: out of memory\n",
                "command": ["ssl-bench", "run", "--algo", "mean_teacher"],
                "setting": {},
                "config": requested,
            }
        )
    )
    interrupted = write_run(
        comparison,
        "mean_teacher",
        50,
        3,
        synthetic_curve("mean_teacher", 50, 3),
        hparams={"ema_decay": 0.99, "consistency_weight": 5.0},
    )
    (interrupted / "final.json").unlink()

    report = build_report(comparison)
    failed = {run.path: run for run in report.failed}
    assert set(failed) == {"digits-50/pi_model/seed0", "digits-50/mean_teacher/seed3", "digits-50/mean_teacher/seed4"}
    assert failed["digits-50/mean_teacher/seed4"].error == "RuntimeError: out of memory"
    assert failed["digits-50/pi_model/seed0"].status == "failed"
    assert "ema_decay=1.5 is out of range" in failed["digits-50/pi_model/seed0"].error
    assert failed["digits-50/mean_teacher/seed3"].status == "incomplete"

    pi_row = row_for(report, "final", "pi_model", 50)
    assert pi_row.n_failed == 1 and pi_row.errors == {}
    mt_row = row_for(report, "final", "mean_teacher", 50)
    # Neither the interrupted seed nor the one that never started is averaged; both are counted as failed,
    # in the same row as their finished siblings (same backbone, no spurious setting).
    assert mt_row.n_failed == 2 and mt_row.errors["student"].n == 3
    assert mt_row.setting == () and mt_row.backbone == "tiny_cnn"

    text = (comparison / "report.md").read_text()
    assert "## Failed or incomplete runs" in text
    assert "| digits-50/pi_model/seed0 | failed | error: hyperparameter ema_decay=1.5 is out of range |" in text
    assert "| 3 (2 failed) |" in text
    csv_rows = list(csv.DictReader((comparison / "results.csv").open()))
    assert any(c["algorithm"] == "pi_model" and c["n_failed"] == "1" and c["n"] == "0" for c in csv_rows)


def test_plots_are_valid_pngs_linked_from_report(comparison: Path) -> None:
    from matplotlib.image import imread

    report = build_report(comparison)
    names = sorted(path.name for path in report.plots)
    assert names == ["curves_digits-tiny_cnn-50.png", "curves_digits-tiny_cnn-500.png", "labels_digits.png"]
    text = (comparison / "report.md").read_text()
    for path in report.plots:
        assert path.read_bytes().startswith(PNG_SIGNATURE)
        height, width = imread(path).shape[:2]
        assert height > 100 and width > 100
        assert f"]({path.name})" in text


def test_sweep_grid_gets_one_plot_per_swept_hyperparameter(tmp_path: Path) -> None:
    for decay in (0.9, 0.99, 0.999):
        for weight in (1.0, 10.0, 100.0):
            for seed in (0, 1):
                curve = [
                    (
                        10,
                        {"student": 30.0, "teacher": 29.0},
                        {"student": 30 + weight / 50 + seed, "teacher": 28 + 10 * (1 - decay) + seed},
                    )
                ]
                write_run(
                    tmp_path,
                    "mean_teacher",
                    50,
                    seed,
                    curve,
                    hparams={"ema_decay": decay, "consistency_weight": weight, "consistency": "mse"},
                    setting_dir=f"ema_decay={decay},consistency_weight={weight}",
                )
    report = build_report(tmp_path)
    rows = report.rows_for("final")
    assert len(rows) == 9
    assert {tuple(key for key, _ in row.setting) for row in rows} == {("consistency_weight", "ema_decay")}
    row = next(r for r in rows if dict(r.setting) == {"consistency_weight": 10.0, "ema_decay": 0.999})
    assert row.errors["teacher"].values == pytest.approx([28.01, 29.01])
    sweep_plots = sorted(p.name for p in report.plots if p.name.startswith("sweep_"))
    assert sweep_plots == [
        "sweep_digits-tiny_cnn-50-mean_teacher-consistency_weight.png",
        "sweep_digits-tiny_cnn-50-mean_teacher-ema_decay.png",
    ]
    for name in sweep_plots:
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
    assert "consistency_weight=10, ema_decay=0.999" in report.markdown


def test_sweep_plot_draws_the_supervised_mean_of_the_same_block_as_a_reference_line(tmp_path: Path) -> None:
    for weight in (1.0, 10.0):
        curve = [(10, {"student": 30.0}, {"student": 20.0 + weight})]
        write_run(tmp_path, "pi_model", 50, 0, curve, hparams={"consistency_weight": weight},
                  setting_dir=f"consistency_weight={weight}")
    for seed, error in ((0, 24.0), (1, 26.0)):
        write_run(tmp_path, "supervised", 50, seed, [(10, {"student": 30.0}, {"student": error})])
    write_run(tmp_path, "supervised", 500, 0, [(10, {"student": 30.0}, {"student": 5.0})])
    report = build_report(tmp_path)
    assert baseline_means(report.rows) == {
        ("digits", "tiny_cnn", 50, "final"): 25.0,
        ("digits", "tiny_cnn", 50, "best_val"): 25.0,
        ("digits", "tiny_cnn", 500, "final"): 5.0,
        ("digits", "tiny_cnn", 500, "best_val"): 5.0,
    }
    with_line = (tmp_path / "sweep_digits-tiny_cnn-50-pi_model-consistency_weight.png").read_bytes()
    for folder in (tmp_path / "digits-50" / "supervised", tmp_path / "digits-500"):
        shutil.rmtree(folder)
    build_report(tmp_path)
    without_line = (tmp_path / "sweep_digits-tiny_cnn-50-pi_model-consistency_weight.png").read_bytes()
    assert with_line != without_line


def test_value_derived_from_label_count_is_not_a_swept_setting(comparison: Path) -> None:
    # consistency_weight = labels / 10 differs between 50 and 500 labels, but not within one count.
    report = build_report(comparison)
    assert all(row.setting == () for row in report.rows)
    assert "Setting" not in report.markdown


def test_runs_with_different_splits_for_the_same_seed_are_flagged(tmp_path: Path) -> None:
    curve = synthetic_curve("supervised", 50, 0)
    write_run(tmp_path, "supervised", 50, 0, curve, labeled=[1, 2, 3])
    write_run(tmp_path, "pi_model", 50, 0, curve, labeled=[1, 2, 4])
    report = build_report(tmp_path)
    assert any("digits, 50 labels, seed 0: runs use different splits" in w for w in report.warnings)
    assert "runs use different splits" in report.markdown


def test_algorithms_with_different_budgets_are_flagged(tmp_path: Path) -> None:
    curve = synthetic_curve("supervised", 50, 0)
    write_run(tmp_path, "supervised", 50, 0, curve, steps=30)
    write_run(tmp_path, "pi_model", 50, 0, curve, steps=60)
    report = build_report(tmp_path)
    assert report.warnings == [
        "digits (tiny_cnn), 50 labels: steps differs between algorithms (supervised 30, pi_model 60)"
    ]


def test_runs_with_different_thread_counts_are_flagged_and_not_a_swept_setting(tmp_path: Path) -> None:
    curve = synthetic_curve("supervised", 50, 0)
    write_run(tmp_path, "supervised", 50, 0, curve, execution={"threads": 1, "device": "cpu", "eval_every": 10})
    write_run(tmp_path, "supervised", 50, 1, curve, execution={"threads": 2, "device": "auto", "eval_every": 5})
    write_run(tmp_path, "pi_model", 50, 0, curve, execution={"threads": 2, "out": "elsewhere", "preset": "digits-cpu"})
    report = build_report(tmp_path)
    assert report.warnings == [
        "digits (tiny_cnn), 50 labels: threads differs between runs (1/2); results on a CPU depend on the thread count"
    ]
    # Execution settings never split runs into swept settings.
    assert all(row.setting == () for row in report.rows)
    assert row_for(report, "final", "supervised", 50).errors["student"].n == 2


def test_report_of_a_folder_without_runs_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserInputError, match="no run folders"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_command_prints_both_selections(comparison: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["report", str(comparison), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Final model" in printed and "Best validation" in printed and "mean_teacher" in printed
    assert (out / "report.md").exists() and (out / "results.csv").exists()
