"""Export, evaluate and predict: the exported model is the run's model, and its test error is the recorded one."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from ssl_toolkit import load_exported
from ssl_toolkit.checkpoint import load_checkpoint
from ssl_toolkit.cli import main
from ssl_toolkit.data.sources import load_dataset
from ssl_toolkit.data.zca import ZCAWhitener
from ssl_toolkit.export import evaluate_path
from ssl_toolkit.registry import list_algorithms
from ssl_toolkit.testing import tiny_run_flags

RUN = tiny_run_flags(steps=6)


def train(out, algo, *flags) -> dict:
    assert main(["run", "--algo", algo, *RUN, "--out", str(out), *flags]) == 0
    return json.loads((out / "final.json").read_text())


@pytest.fixture(scope="module")
def mean_teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mt") / "run"
    train(out, "mean_teacher")
    return out


@pytest.fixture(scope="module")
def teacher_export(mean_teacher_run):
    out = mean_teacher_run.parent / "teacher"
    assert main(["export", str(mean_teacher_run), "--model", "teacher", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("algo", list_algorithms())
def test_evaluate_reproduces_final_json_exactly_from_the_run_and_from_each_export(tmp_path, algo):
    final = train(tmp_path / "run", algo)
    from_run = {e.model: e.test_error for e in evaluate_path(tmp_path / "run")}
    assert from_run == final["test_error"]
    for model, recorded in final["test_error"].items():
        assert main(["export", str(tmp_path / "run"), "--model", model, "--out", str(tmp_path / model)]) == 0
        [evaluation] = evaluate_path(tmp_path / model)
        assert (evaluation.model, evaluation.test_error, evaluation.recorded) == (model, recorded, recorded)


def test_exported_weights_are_the_teachers_alone_and_load_back_with_one_call(mean_teacher_run, teacher_export):
    state = load_checkpoint(mean_teacher_run / "checkpoint.pt")
    teacher = {key.removeprefix("teacher."): value for key, value in state["algorithm"].items()
               if key.startswith("teacher.")}
    saved = load_file(str(teacher_export / "model.safetensors"))
    assert saved.keys() == teacher.keys() and all(torch.equal(saved[k], teacher[k]) for k in saved)
    model, preprocess = load_exported(teacher_export)
    assert not model.training
    assert all(torch.equal(value, teacher[key]) for key, value in model.state_dict().items())
    assert torch.equal(preprocess.transform.mean.flatten(), state["preprocess"]["mean"])
    assert torch.equal(preprocess.transform.std.flatten(), state["preprocess"]["std"])
    assert preprocess.input_size == (1, 8, 8) and preprocess.class_names == [str(d) for d in range(10)]


def test_export_config_is_timm_style_and_records_where_the_model_came_from(mean_teacher_run, teacher_export):
    config = json.loads((teacher_export / "config.json").read_text())
    final = json.loads((mean_teacher_run / "final.json").read_text())
    assert config["architecture"] == "convnet_tiny" and config["num_classes"] == 10
    assert config["model_args"] == {"in_chans": 1, "num_classes": 10}
    timm_cfg = config["pretrained_cfg"]
    assert timm_cfg["input_size"] == [1, 8, 8]
    assert timm_cfg["classifier"] == "head.fc" and timm_cfg["first_conv"] == "features.0"
    preprocess = json.loads((teacher_export / "preprocess.json").read_text())
    assert timm_cfg["mean"] == preprocess["mean"] and timm_cfg["std"] == preprocess["std"]
    record = config["ssl_bench"]
    assert (record["model"], record["step"], record["test_error"]) == ("teacher", 6, final["test_error"]["teacher"])
    assert record["run_config"] == json.loads((mean_teacher_run / "config.json").read_text())


def test_a_mean_teacher_with_two_heads_exports_its_backbone_as_a_plain_timm_model(tmp_path):
    final = train(tmp_path / "run", "mean_teacher", "--set", "logit_distance_cost=0.01")
    assert main(["export", str(tmp_path / "run"), "--model", "teacher", "--out", str(tmp_path / "teacher")]) == 0
    saved = load_file(str(tmp_path / "teacher" / "model.safetensors"))
    assert saved.keys() == timm.create_model("convnet_tiny", in_chans=1).state_dict().keys(), "no second head"
    [evaluation] = evaluate_path(tmp_path / "teacher")
    assert evaluation.test_error == final["test_error"]["teacher"]


def test_a_zca_export_whitens_exactly_as_the_run_did(tmp_path):
    final = train(tmp_path / "run", "pi_model", "--zca")
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model" / "preprocess.safetensors").is_file()
    _, preprocess = load_exported(tmp_path / "model")
    whitener = ZCAWhitener.from_state_dict(load_checkpoint(tmp_path / "run" / "checkpoint.pt")["preprocess"])
    images = torch.from_numpy(load_dataset("digits", None).x_test[:50])
    assert torch.equal(preprocess(images), whitener(images))
    assert evaluate_path(tmp_path / "model")[0].test_error == final["test_error"]["student"]


def test_timm_alone_loads_the_export_of_a_timm_backbone(tmp_path):
    train(tmp_path / "run", "supervised", "--backbone", "test_resnet", "--image-size", "32")
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "model")]) == 0
    ours, preprocess = load_exported(tmp_path / "model")
    theirs = timm.create_model(f"local-dir:{tmp_path / 'model'}", pretrained=True).eval()
    data_config = timm.data.resolve_data_config({}, model=theirs)
    assert data_config["input_size"] == (1, 32, 32)
    assert torch.allclose(torch.tensor(data_config["mean"]), preprocess.transform.mean.flatten())
    images = torch.from_numpy(load_dataset("digits", None, {}).x_test[:8])
    images = torch.nn.functional.interpolate(images.float(), size=32).to(torch.uint8)
    with torch.no_grad():
        assert torch.equal(ours(preprocess(images)), theirs(preprocess(images)))


def test_predict_ranks_image_files_and_npz_arrays_by_the_models_probabilities(teacher_export, tmp_path, capsys):
    model, preprocess = load_exported(teacher_export)
    images = load_dataset("digits", None).x_test[:3]
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(tmp_path / f"{i}.png")
    np.savez(tmp_path / "batch.npz", images=images)
    files = [str(tmp_path / f"{i}.png") for i in range(3)]
    assert main(["predict", str(teacher_export), *files, str(tmp_path / "batch.npz"), "--top", "2",
                 "--csv", str(tmp_path / "out.csv")]) == 0
    with torch.no_grad():
        probabilities = model(preprocess(torch.from_numpy(images))).softmax(dim=1)
    with (tmp_path / "out.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    sources = files + [f"{tmp_path / 'batch.npz'}[{i}]" for i in range(3)]
    assert [(r["input"], r["rank"]) for r in rows] == [(s, rank) for s in sources for rank in ("1", "2")]
    for row in rows:
        i = int(row["input"][-2]) if row["input"].endswith("]") else int(row["input"][-5])
        expected_top = probabilities[i].topk(2)
        rank = int(row["rank"]) - 1
        assert int(row["class_index"]) == int(expected_top.indices[rank]) and row["class"] == row["class_index"]
        assert float(row["probability"]) == pytest.approx(float(expected_top.values[rank]), rel=1e-6)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{files[0]}: {int(probabilities[0].argmax())} ")


def test_predict_resizes_images_of_another_size_with_the_bicubic_filter(teacher_export, tmp_path, capsys):
    big = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(big).convert("RGB").save(tmp_path / "big.png")  # RGB, to a grayscale model
    small = np.asarray(Image.fromarray(big).resize((8, 8), Image.Resampling.BICUBIC))
    np.savez(tmp_path / "small.npz", images=small[None, None])
    assert main(["predict", str(teacher_export), str(tmp_path / "big.png"), str(tmp_path / "small.npz"),
                 "--top", "10"]) == 0
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first.split(": ")[1] == second.split(": ")[1]


@pytest.mark.parametrize("argv, message", [
    (["predict", "{export}", "{tmp}/missing.png"], "missing.png: no such file"),
    (["predict", "{export}", "{tmp}/x.png", "--top", "11"], "--top 11 is out of range; valid: 1..10"),
    (["export", "{run}", "--model", "coach", "--out", "{tmp}/m"], "--model coach: mean_teacher evaluates student, "
                                                                  "teacher; valid: student, teacher"),
    (["export", "{run}", "--out", "{export}"], "already holds an export"),
    (["evaluate", "{tmp}"], "is neither a run folder"),
    (["evaluate", "{export}", "--model", "student"], "holds the teacher; valid: teacher"),
])
def test_bad_input_is_one_line_exit_2(mean_teacher_run, teacher_export, tmp_path, capsys, argv, message):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    names = {"export": teacher_export, "run": mean_teacher_run, "tmp": tmp_path}
    assert main([arg.format(**names) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
