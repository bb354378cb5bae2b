"""Every registered backbone passes the same checks the moment it is registered, as timm tests its models."""

from __future__ import annotations

import pytest
import timm
import torch

from ssl_toolkit.backbones import create_backbone, list_backbones, register_backbone
from ssl_toolkit.errors import UserInputError

# Small inputs keep the deep nets fast; every backbone here pools globally, so any size above its
# minimum works (ConvNet-13 needs 12 pixels).
IMAGE_SIZE = 16


def _built(name: str, channels: int = 3, classes: int = 7) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_backbone(name, in_chans=channels, num_classes=classes)


def test_the_shipped_backbones_are_listed_from_timms_registry():
    assert {"convnet_tiny", "convnet_small", "convnet_medium", "convnet13", "wrn28_2", "shakeshake26_2x96d"} <= set(
        list_backbones()
    )
    assert list_backbones("convnet_*") == ["convnet_medium", "convnet_small", "convnet_tiny"]
    assert "resnet18" not in list_backbones(), "timm's own models are usable but not listed as ours"


@pytest.mark.parametrize("name", list_backbones())
def test_forward_backward_reaches_every_parameter_with_finite_gradients(name):
    model = _built(name, channels=1).train()
    x = torch.randn(3, 1, IMAGE_SIZE, IMAGE_SIZE)
    logits = model(x)
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    (logits * torch.randn_like(logits)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", list_backbones())
def test_state_dict_round_trip_gives_the_same_outputs(name):
    model, other = _built(name).eval(), _built(name).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


@pytest.mark.parametrize("name", list_backbones())
def test_timm_classifier_interface_splits_features_and_head(name):
    # Mean Teacher's logit-distance variant builds its second head on this interface.
    model = _built(name).eval()
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(model.get_classifier()(pre), model(x), atol=1e-5)


def test_a_name_taken_by_another_module_is_refused():
    def convnet_tiny(pretrained=False, **kwargs):  # same name as a shipped backbone
        raise AssertionError("never built")

    with pytest.raises(UserInputError, match="already registered"):
        register_backbone(convnet_tiny)
    assert timm.models.model_entrypoint("convnet_tiny").__module__ == "ssl_toolkit.backbones.small"


def test_an_unknown_name_suggests_the_closest():
    with pytest.raises(UserInputError, match="did you mean 'convnet_small'"):
        create_backbone("convnet_smal", in_chans=1, num_classes=10)
