"""The paper backbones (convnet13, wrn28_2, shakeshake26_2x96d): sizes, shapes, heads, stochasticity."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from torch import nn

import ssl_toolkit.backbones.convnet13 as convnet13_module
import ssl_toolkit.backbones.shakeshake  # noqa: F401  (registers shakeshake26_2x96d)
import ssl_toolkit.backbones.wrn  # noqa: F401  (registers wrn28_2)
from ssl_toolkit.algorithms.mean_teacher import TwoHeads
from ssl_toolkit.backbones.convnet13 import MeanOnlyBatchNorm
from ssl_toolkit.backbones.shakeshake import ShakeShakeResNet, shake
from ssl_toolkit.errors import UserInputError

PAPER_MODELS = ["convnet13", "wrn28_2", "shakeshake26_2x96d"]

# Published sizes, in millions: "~3.1M" (Mean Teacher / REFERENCE.md), "1.5M" (Oliver et al. 2018),
# "26.2M" (Gastaldi 2017, the 2x96d net that Mean Teacher's Table 4 uses).
PUBLISHED_MILLIONS = {"convnet13": 3.1, "wrn28_2": 1.5, "shakeshake26_2x96d": 26.2}
# The papers round to one decimal of a million, so the true count of the published net lies within
# half a unit of that digit: +-0.05M. A count outside that window is a different architecture.
PUBLISHED_TOLERANCE_MILLIONS = 0.05


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.cache
def built(name: str, **options: object) -> nn.Module:
    """A model for tests that only read it (sizes, configs): shake-shake takes a while to build."""
    return timm.create_model(name, **options)


def two_images(channels: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(2, channels, size, size)


# --- parameter counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_parameter_count_matches_published_size(name: str) -> None:
    count = n_params(built(name, num_classes=10))
    assert abs(count / 1e6 - PUBLISHED_MILLIONS[name]) <= PUBLISHED_TOLERANCE_MILLIONS, count


def test_convnet13_weight_norm_variant_matches_published_size() -> None:
    count = n_params(timm.create_model("convnet13", num_classes=10, weight_norm=True))
    assert abs(count / 1e6 - 3.1) <= PUBLISHED_TOLERANCE_MILLIONS, count


def _expected_convnet13(classes: int, weight_norm: bool) -> int:
    # Re-derived from the layer list: (c_in, c_out, kernel) of the nine convs.
    convs = [(3, 128, 3), (128, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3), (256, 256, 3),
             (256, 512, 3), (512, 256, 1), (256, 128, 1)]  # fmt: skip
    weights = sum(i * o * k * k for i, o, k in convs)
    per_channel = sum(2 * o for _, o, _ in convs)  # BN scale+shift, or weight-norm gain + mean-only-BN bias
    dense = 128 * classes + (2 * classes if weight_norm else classes)
    return weights + per_channel + dense


def _expected_wrn28_2(classes: int) -> int:
    total = 3 * 16 * 9  # initial conv
    for c_in, c_out in [(16, 32), (32, 64), (64, 128)]:
        total += c_in * c_out * 9 + c_out * c_out * 9 + c_in * c_out  # first unit: two convs + 1x1 shortcut
        total += 2 * c_in + 2 * c_out  # its two BNs
        total += 3 * (2 * c_out * c_out * 9 + 4 * c_out)  # three more units
    return total + 2 * 128 + 128 * classes + classes  # final BN, dense


def _expected_shakeshake26_2x96d(classes: int, heads: int) -> int:
    total = 3 * 16 * 9  # stem
    total += 16 * 96 + 2 * 96  # 1x1 conv + BN shortcut into stage 1
    # Shift shortcuts into stages 2 and 3: 1x1 conv from the two stacked grids (2 c_in channels) in two
    # groups, so c_out * c_in weights, plus its bias and BN.
    total += 192 * 96 + 192 + 2 * 192
    total += 384 * 192 + 384 + 2 * 384
    for c_in, c_out in [(16, 96), (96, 192), (192, 384)]:
        first = 2 * (c_in * c_out * 9 + c_out * c_out * 9 + 4 * c_out)  # two branches, two conv+BN each
        total += first + 3 * 2 * (2 * c_out * c_out * 9 + 4 * c_out)
    return total + heads * (384 * classes + classes)


def test_parameter_counts_equal_hand_derivation_from_the_layer_lists() -> None:
    assert n_params(built("convnet13", num_classes=10)) == _expected_convnet13(10, False)
    assert n_params(timm.create_model("convnet13", num_classes=100, weight_norm=True)) == _expected_convnet13(
        100, True
    )
    assert n_params(built("wrn28_2", num_classes=10)) == _expected_wrn28_2(10)
    assert n_params(built("shakeshake26_2x96d", num_classes=10)) == _expected_shakeshake26_2x96d(10, heads=1)


def _expected_small_convnet(widths: list[int], in_chans: int, classes: int) -> int:
    # 3x3 convolutions without bias, each followed by BatchNorm (scale and shift); one linear head.
    total, c_in = 0, in_chans
    for c_out in widths:
        total += c_in * c_out * 9 + 2 * c_out
        c_in = c_out
    return total + c_in * classes + classes


@pytest.mark.parametrize(
    "name, widths",
    [("convnet_tiny", [32, 32, 64, 64]), ("convnet_small", [16, 16, 32, 32, 64]),
     ("convnet_medium", [32, 32, 64, 64, 128])],
)
def test_cpu_convnet_parameter_counts_equal_hand_derivation(name: str, widths: list[int]) -> None:
    assert n_params(timm.create_model(name, in_chans=1, num_classes=10)) == _expected_small_convnet(widths, 1, 10)


# --- shapes, inputs, heads -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_32x32_input_gives_one_logit_row_per_image(name: str) -> None:
    model = timm.create_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(two_images())
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [28, 96])
def test_convnet13_global_pooling_accepts_other_input_sizes(size: int) -> None:
    model = timm.create_model("convnet13", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_convnet13_rejects_inputs_too_small_for_its_valid_conv() -> None:
    model = timm.create_model("convnet13").eval()
    with pytest.raises(UserInputError, match="too small"):
        model(two_images(size=8))


def test_shakeshake_shift_shortcut_handles_odd_feature_maps() -> None:
    # 30 -> 15 after the first halving: the shifted grid must still match the strided branches.
    model = ShakeShakeResNet(depth=8, base_width=4, num_classes=3).eval()
    with torch.no_grad():
        assert model(two_images(size=30)).shape == (2, 3)


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_single_channel_input_works_with_in_chans_1(name: str) -> None:
    model = timm.create_model(name, num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert model(two_images(channels=1, size=16)).shape == (2, 10)
    with pytest.raises(RuntimeError):
        model(two_images(channels=3, size=16))


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_mean_teachers_two_heads_wrap_the_backbone_with_distinct_logit_tensors(name: str) -> None:
    model = TwoHeads(timm.create_model(name, num_classes=10)).eval()
    x = two_images(size=16)
    with torch.no_grad():
        out = model(x)
        alone = model.backbone(x)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == (2, 10) and out[1].shape == (2, 10)
    assert torch.allclose(out[0], alone, atol=1e-6), "head 1 is the backbone's own classifier"
    # Independently initialized heads on the same features.
    assert not torch.allclose(out[0], out[1])


def test_reset_classifier_changes_the_class_count() -> None:
    model = timm.create_model("wrn28_2", num_classes=10).eval()
    model.reset_classifier(4)
    with torch.no_grad():
        out = model(two_images())
    assert model.num_classes == 4 and out.shape == (2, 4)


def test_zero_classes_returns_pooled_features() -> None:
    model = timm.create_model("wrn28_2", num_classes=0).eval()
    with torch.no_grad():
        assert model(two_images()).shape == (2, model.num_features)


# --- stochasticity -----------------------------------------------------------------------------------------


def test_shakeshake_is_stochastic_in_train_mode_and_deterministic_in_eval_mode() -> None:
    model = timm.create_model("shakeshake26_2x96d", num_classes=10)
    x = two_images(size=16)
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_shake_draws_independent_forward_and_backward_coefficients_per_image() -> None:
    a = torch.ones(64, 3, 2, 2, requires_grad=True)
    b = torch.zeros(64, 3, 2, 2, requires_grad=True)
    out = shake(a, b, training=True)
    out.sum().backward()
    alpha = out.detach()[:, 0, 0, 0]  # forward coefficient of each image (a = 1, b = 0)
    beta = a.grad[:, 0, 0, 0]  # backward coefficient of each image
    # One coefficient per image, shared by all its elements.
    assert torch.equal(out.detach(), alpha.view(-1, 1, 1, 1).expand_as(out))
    assert ((alpha >= 0) & (alpha <= 1)).all() and ((beta >= 0) & (beta <= 1)).all()
    assert alpha.std() > 0.1 and beta.std() > 0.1
    assert torch.allclose(a.grad + b.grad, torch.ones_like(a))
    assert not torch.allclose(alpha, beta, atol=1e-3)


def test_shake_averages_both_branches_in_eval_mode() -> None:
    a = torch.full((4, 2), 3.0, requires_grad=True)
    b = torch.full((4, 2), 1.0, requires_grad=True)
    out = shake(a, b, training=False)
    out.sum().backward()
    assert torch.equal(out, torch.full((4, 2), 2.0))
    assert torch.equal(a.grad, torch.full((4, 2), 0.5)) and torch.equal(b.grad, torch.full((4, 2), 0.5))


@pytest.mark.parametrize(("name", "drop_rate"), [("convnet13", 0.5), ("wrn28_2", 0.5)])
def test_dropout_is_active_only_in_train_mode(name: str, drop_rate: float) -> None:
    x = two_images()
    with torch.no_grad():
        model = timm.create_model(name, num_classes=10, drop_rate=drop_rate)
        assert not torch.allclose(model.train()(x), model(x))
        assert torch.equal(model.eval()(x), model(x))
        # Without dropout the train-mode pass is deterministic: the randomness above was dropout.
        no_dropout = timm.create_model(name, num_classes=10, drop_rate=0.0).train()
        assert torch.equal(no_dropout(x), no_dropout(x))


def test_convnet13_has_the_papers_two_dropout_layers_at_half_rate_by_default() -> None:
    model = timm.create_model("convnet13")
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]


# --- gradients ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("convnet13", {}),
        ("convnet13", {"weight_norm": True}),
        ("wrn28_2", {}),
        ("shakeshake26_2x96d", {}),
    ],
)
def test_one_backward_pass_reaches_every_parameter(name: str, options: dict) -> None:
    model = TwoHeads(timm.create_model(name, num_classes=10, **options)).train()
    # 16x16 rather than 32x32 keeps shake-shake's backward short; every layer still sees >= 2x2 maps.
    head1, head2 = model(two_images(size=16))
    # Random weights per logit: a plain sum would be flat under (mean-only) batch norm of the logits.
    loss = (head1 * torch.randn_like(head1)).sum() + (head2 * torch.randn_like(head2)).sum()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


# --- weight norm and mean-only batch norm -----------------------------------------------------------------


def test_convnet13_weight_norm_uses_no_batch_norm_and_ignores_the_direction_vectors_scale() -> None:
    model = timm.create_model("convnet13", weight_norm=True).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = two_images()
    model(torch.randn(8, 3, 32, 32))  # sets the running means
    model.eval()
    with torch.no_grad():
        before = model(x)
        for pname, p in model.named_parameters():
            if pname.endswith("parametrizations.weight.original1"):
                p.mul_(3.0)
        after = model(x)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-5)


def test_mean_only_batch_norm_centres_in_training_and_uses_its_running_mean_in_eval() -> None:
    bn = MeanOnlyBatchNorm(3, momentum=0.25)
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    first, second = torch.randn(4, 3, 5, 5) + 2.0, torch.randn(4, 3, 5, 5) - 1.0
    out = bn.train()(first)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), bn.bias.detach(), atol=1e-5)
    assert torch.allclose(out - first, (bn.bias - first.mean(dim=(0, 2, 3))).view(1, 3, 1, 1).expand_as(out))
    # The first batch sets the running mean; later ones move it by `momentum`.
    assert torch.allclose(bn.running_mean, first.mean(dim=(0, 2, 3)))
    bn(second)
    expected = 0.75 * first.mean(dim=(0, 2, 3)) + 0.25 * second.mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)
    x = torch.randn(2, 3, 5, 5)
    assert torch.allclose(bn.eval()(x), x - expected.view(1, 3, 1, 1) + bn.bias.detach().view(1, 3, 1, 1))


def test_paper_batch_norm_momentum_is_the_tensorflow_decay_0_999() -> None:
    for name in ("convnet13", "wrn28_2"):
        model = timm.create_model(name)
        momenta = {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
        assert momenta == {0.001}, name


# --- timm options and bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_pretrained_true_raises_because_no_weights_exist(name: str) -> None:
    with pytest.raises(UserInputError, match="no pretrained weights exist"):
        timm.create_model(name, pretrained=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_heads": 2}, "num_heads"),
        ({"num_classes": -1}, "num_classes=-1"),
        ({"drop_rate": 1.0}, "drop_rate=1.0"),
        ({"bn_momentum": 0.0}, "bn_momentum=0.0"),
        ({"drop_path_rate": 0.1}, "drop_path_rate=0.1"),
        ({"global_pool": "max"}, "global_pool='max'"),
        ({"widht": 2}, "widht"),
        ({"depth": 40}, "depth"),
    ],
)
def test_invalid_options_raise_a_message_naming_the_value(options: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        timm.create_model("wrn28_2", **options)


def test_registering_a_name_owned_by_another_module_raises() -> None:
    def wrn28_2() -> nn.Module:  # same name as the registered backbone, defined in this test module
        raise AssertionError("never called")

    with pytest.raises(UserInputError, match="already registered"):
        convnet13_module.register_backbone(wrn28_2)
    assert timm.models.model_entrypoint("wrn28_2").__module__ == "ssl_toolkit.backbones.wrn"


def test_models_carry_a_timm_pretrained_cfg_for_32x32_inputs() -> None:
    for name in PAPER_MODELS:
        cfg = built(name, num_classes=10).pretrained_cfg
        assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 10, name


def test_dtype_option_builds_a_model_that_trains_in_that_dtype() -> None:
    # Mean-only batch norm and shake draw their statistics/coefficients in the input's dtype.
    model = timm.create_model("convnet13", weight_norm=True, dtype=torch.float64).train()
    out = model(two_images(size=16).double())
    assert out.dtype == torch.float64
    ones = torch.ones(2, 3, dtype=torch.float64)
    assert shake(ones, ones * 0, training=True).dtype == torch.float64
