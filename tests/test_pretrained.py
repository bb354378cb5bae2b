"""Pretrained backbones from a file the test writes: every weight but the classifier comes from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from official_format_files import _RunsCommand
from safetensors.torch import save_file

from ssl_toolkit.backbones import create_backbone
from ssl_toolkit.cli import main
from ssl_toolkit.data.arrays import resize_images
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.testing import tiny_run_flags, tiny_trainer


def write_weights(path, model) -> dict[str, torch.Tensor]:
    """Save ``model``'s state dict as safetensors or with torch.save (by suffix); return it."""
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


def head_keys(model) -> set[str]:
    return {key for key in model.state_dict() if key.startswith(("fc.", "head.fc."))}


@pytest.mark.parametrize("backbone, suffix", [("convnet_small", ".safetensors"), ("test_resnet", ".pth")])
def test_pretrained_file_sets_every_weight_but_a_fresh_classifier(tmp_path, backbone, suffix):
    torch.manual_seed(1)
    source = timm.create_model(backbone, in_chans=3, num_classes=7)  # another task: 7 classes
    saved = write_weights(tmp_path / f"weights{suffix}", source)
    torch.manual_seed(0)
    untrained = create_backbone(backbone, in_chans=3, num_classes=10)
    torch.manual_seed(0)
    model = create_backbone(backbone, in_chans=3, num_classes=10, pretrained_file=tmp_path / f"weights{suffix}")
    state, head = model.state_dict(), head_keys(model)
    assert head and model.get_classifier().out_features == 10
    for key in state:
        expected = untrained.state_dict()[key] if key in head else saved[key]
        assert torch.equal(state[key], expected), key


def test_rgb_weights_start_a_grayscale_backbone_with_the_summed_first_convolution(tmp_path):
    torch.manual_seed(1)
    saved = write_weights(tmp_path / "rgb.safetensors", timm.create_model("convnet_small", in_chans=3, num_classes=10))
    model = create_backbone("convnet_small", in_chans=1, num_classes=10, pretrained_file=tmp_path / "rgb.safetensors")
    first = model.state_dict()["features.0.weight"]
    # A gray image g seen as RGB (g, g, g) gives sum_c w_c * g: the summed filter on one channel.
    assert torch.allclose(first, saved["features.0.weight"].sum(dim=1, keepdim=True))


def test_weights_of_another_backbone_are_refused_naming_the_mismatch(tmp_path):
    write_weights(tmp_path / "small.safetensors", timm.create_model("convnet_small", num_classes=10))
    with pytest.raises(UserInputError, match=r"does not fit backbone convnet_medium: features\.0\.weight is "
                                             r"\(16, 3, 3, 3\) in the file but \(32, 3, 3, 3\)"):
        create_backbone("convnet_medium", in_chans=3, num_classes=10, pretrained_file=tmp_path / "small.safetensors")


def test_a_weights_file_that_runs_code_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"features.0.weight": _RunsCommand(exec, f"open({str(marker)!r}, 'w').write('ran')")},
               tmp_path / "evil.pth")
    with pytest.raises(UserInputError, match="evil.pth cannot be read safely"):
        create_backbone("convnet_small", in_chans=3, num_classes=10, pretrained_file=tmp_path / "evil.pth")
    assert not marker.exists()


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(UserInputError, match="no-such.safetensors: no such file; valid: a .safetensors file"):
        create_backbone("convnet_small", in_chans=3, num_classes=10, pretrained_file=tmp_path / "no-such.safetensors")


def test_a_run_starts_student_and_teacher_from_the_file_with_the_backbones_normalization(tmp_path):
    torch.manual_seed(1)
    saved = write_weights(tmp_path / "resnet.safetensors", timm.create_model("test_resnet", num_classes=1000))
    trainer = tiny_trainer("mean_teacher", tmp_path / "run", backbone="test_resnet", image_size=32,
                           pretrained_file=str(tmp_path / "resnet.safetensors"), normalization="backbone")
    assert tuple(trainer.data.pool.shape[1:]) == (1, 32, 32), "digits resized to 32x32 as they are read"
    # test_resnet's pretrained_cfg: mean 0.5, std 0.5 per RGB channel; one gray channel takes their mean.
    assert trainer.data.preprocess.mean.flatten().tolist() == [0.5]
    assert trainer.data.preprocess.std.flatten().tolist() == [0.5]
    for name, model in trainer.algorithm.eval_models().items():
        state = model.state_dict()
        assert torch.equal(state["fc.weight"], trainer.algorithm.student.state_dict()["fc.weight"])
        assert state["fc.weight"].shape == (10, saved["fc.weight"].shape[1])
        assert torch.allclose(state["conv1.0.weight"], saved["conv1.0.weight"].sum(dim=1, keepdim=True)), name
        assert torch.equal(state["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"]), name


def test_run_with_a_pretrained_file_records_it_and_trains(tmp_path, capsys):
    torch.manual_seed(1)
    write_weights(tmp_path / "small.safetensors", timm.create_model("convnet_tiny", in_chans=1, num_classes=10))
    out = tmp_path / "run"
    assert main(["run", "--algo", "supervised", *tiny_run_flags(steps=2), "--out", str(out),
                 "--pretrained-file", str(tmp_path / "small.safetensors")]) == 0
    assert json.loads((out / "config.json").read_text())["pretrained_file"] == str(tmp_path / "small.safetensors")


def test_a_bad_pretrained_file_stops_the_run_before_anything_is_written(tmp_path, capsys):
    write_weights(tmp_path / "small.safetensors", timm.create_model("convnet_small", num_classes=10))
    out = tmp_path / "run"
    code = main(["run", "--algo", "supervised", *tiny_run_flags(steps=2), "--out", str(out),
                 "--pretrained-file", str(tmp_path / "small.safetensors")])  # digits use convnet_tiny
    assert code == 2 and "does not fit backbone convnet_tiny" in capsys.readouterr().err
    assert not out.exists()


def test_backbone_normalization_needs_a_backbone_that_declares_one(tmp_path):
    with pytest.raises(UserInputError, match="backbone 'convnet_tiny' declares no mean and std"):
        tiny_trainer("supervised", tmp_path / "run", normalization="backbone")
    with pytest.raises(UserInputError, match="--zca and --normalization backbone exclude each other"):
        tiny_trainer("supervised", tmp_path / "run", normalization="backbone", zca=True, backbone="test_resnet")


def test_image_size_resizes_any_data_set_with_pillows_bicubic(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 3, 5, 5), dtype=np.uint8)
    resized = resize_images(rgb, 9)
    expected = np.asarray(Image.fromarray(rgb[1].transpose(1, 2, 0), "RGB").resize((9, 9), Image.Resampling.BICUBIC))
    assert resized.shape == (2, 3, 9, 9) and np.array_equal(resized[1], expected.transpose(2, 0, 1))
    assert resize_images(rgb, 5) is rgb, "images of the right size are left alone"
    trainer = tiny_trainer("supervised", tmp_path / "run", image_size=12)
    assert tuple(trainer.data.pool.shape[2:]) == (12, 12) and tuple(trainer.data.test_images.shape[2:]) == (12, 12)
