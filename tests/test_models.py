"""Model zoo tests: exact parameter counts, shapes, one training step, option checks, init, MACs, tables."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from cifarlab.errors import ConfigError
from cifarlab.models import (
    count_macs,
    count_params,
    create,
    format_layer_table,
    get_entry,
    layer_table,
    list_models,
    model_info,
)
from cifarlab.models.layers import ACTIVATIONS, INIT_SCHEMES, init_weights, make_activation, make_norm2d
from cifarlab.models.resnet import BasicBlock, Bottleneck, PreActBlock

VGG_A_CONVS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg_a_params(mult: float = 1.0, batchnorm: bool = False) -> int:
    """VGG-A count from its layer list: conv3x3 with bias (+ BN gamma/beta), FC 512*m -> 512*m -> 10."""
    total, cin = 0, 3
    for c in VGG_A_CONVS:
        if c == "M":
            continue
        cout = max(1, round(c * mult))
        total += cin * cout * 9 + cout + (2 * cout if batchnorm else 0)
        cin = cout
    h = max(1, round(512 * mult))
    return total + (cin * h + h) + (h * h + h) + (h * 10 + 10)


def vgg_a_macs() -> int:
    """Hand MACs of VGG-A on 32x32: conv = Cout*Cin*k*k*Hout*Wout, linear = in*out."""
    macs, cin, size = 0, 3, 32
    for c in VGG_A_CONVS:
        if c == "M":
            size //= 2
            continue
        macs += c * cin * 9 * size * size
        cin = c
    return macs + 512 * 512 + 512 * 512 + 512 * 10


def with_hidden(base: int, cin: int, hidden: tuple[int, ...] = (512,)) -> int:
    """A pooled-head model's count with hidden FCs: its Linear(cin, 10) replaced by cin -> hidden... -> 10."""
    widths = (cin, *hidden, 10)
    return base - (cin * 10 + 10) + sum(a * b + b for a, b in itertools.pairwise(widths))


# Hidden FC on every pooled-head family: (name, flattened head input, base count).
HIDDEN_HEADS = (("resnet18", 512, 11_173_962), ("resnet3stage", 256, 2_777_674), ("residual_cnn", 4096, 2_816_074),
                ("preact_resnet18", 512, 11_171_146), ("resnext50_32x4d", 2048, 22_992_714),
                ("resnext29_32x4d", 1024, 4_774_218), ("densenet121", 1024, 6_956_298),
                ("dpn26", 2432, 11_574_842), ("dla", 512, 16_291_386), ("simple_dla", 512, 15_142_970),
                ("vgg16", 512, 14_728_266), ("mobilenetv2", 1280, 2_296_922))

EXPECTED_PARAMS: dict[str | tuple[str, tuple[tuple[str, object], ...]], int] = {
    "quick_cnn": 94_762,
    "fast_net": 1_971_352,  # trainable: 1,972,792 minus the frozen whitening filters (288) and BN scales (1,152)
    ("fast_net", (("widths", (32, 128, 128)),)): 497_240,  # the fast-cpu preset's half width
    "vgg_a": 9_750_922,
    "vgg_a_bn": 9_756_426,
    "vgg_a_light": 285_162,
    "vgg_a_dropout": 9_750_922,
    "vgg_a_bn_dropout": 9_756_426,
    "vgg_a_bn_dropout_res": 9_756_426,  # identity shortcuts only: no extra parameters
    "vgg_a_noisy_bn": 9_756_426,  # noise adds no parameters
    "vgg_a_leaky": 9_750_922,
    ("vgg_a", (("width_mult", 0.25),)): vgg_a_params(0.25),
    # LeNet-style course net: convs keep their bias next to BN.
    "mynet": 152_820,
    ("mynet", (("hidden", 500),)): 657_220,
    # 3x3 kernel, unpadded: 32-30-15-13-6 -> FC input 50*6*6 = 1800
    ("mynet", (("kernel_size", 3),)): 560 + 40 + 9_050 + 100 + (1800 * 100 + 100) + 1010,
    # 7x7 kernel, padding 1: 32-28-14-10-5 -> 1250 again
    ("mynet", (("kernel_size", 7),)): (3 * 20 * 49 + 20 + 40) + (20 * 50 * 49 + 50 + 100) + 125_100 + 1010,
    # per-conv kernels: [5, 3] -> 32-28-14-12-6 -> 1800 FC inputs (the mynet presets' "5x5 -> 3x3" row, hidden 500)
    ("mynet", (("hidden", 500), ("kernel_size", (5, 3)))): 1520 + 40 + 9_050 + 100 + (1800 * 500 + 500) + 5010,
    ("mynet", (("hidden", 500), ("kernel_size", 3))): 915_260,  # both convs 3x3
    ("mynet", (("kernel_size", (3, 5)),)): 560 + 40 + 25_050 + 100 + (50 * 5 * 5 * 100 + 100) + 1010,  # 30-15-11-5
    ("cnn3", (("kernel_size", (5, 3, 3)),)): 2_603_274 + 3 * 64 * (25 - 9),
    "basic_cnn": 1_147_466,
    "improved_cnn": 12_906_250,
    "residual_cnn": 2_816_074,
    "cnn3": 2_603_274,
    # kuangliu/pytorch-cifar designs
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "resnet50": 23_520_842,
    "preact_resnet18": 11_171_146,
    "resnet3stage": 2_777_674,  # residual_cnn minus its 4x4 pooled head: 2,816,074 - 40,970 + 2,570
    "resnext29_32x4d": 4_774_218,  # kuangliu's 1x1 stem
    ("resnext29_32x4d", (("stem_kernel", 3),)): 4_774_218 + 3 * 64 * (9 - 1),
    "resnext50_32x4d": 22_992_714,
    "densenet121": 6_956_298,
    "dpn26": 11_574_842,
    "dpn92": 34_236_634,
    "dla": 16_291_386,
    "simple_dla": 15_142_970,
    "vgg11": 9_231_114,
    "vgg13": 9_416_010,
    "vgg16": 14_728_266,
    "vgg19": 20_040_522,
    "mobilenetv2": 2_296_922,
    **{(name, (("hidden", (512,)),)): with_hidden(base, cin) for name, cin, base in HIDDEN_HEADS},
    **{(name, (("hidden", (256, 128)), ("dropout", 0.5))): with_hidden(base, cin, (256, 128))
       for name, cin, base in HIDDEN_HEADS[:3]},
}

# Models above ~250M MACs get batch 2 in the training-step test, to keep the file fast on 2 CPU cores.
BIG = {
    "densenet121", "dla", "dpn26", "dpn92", "preact_resnet18", "residual_cnn", "resnet18", "resnet34",
    "resnet50", "resnet3stage", "resnext29_32x4d", "resnext50_32x4d", "simple_dla", "vgg16", "vgg19",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These are many tiny forward/backward passes: on a shared 2-core box, intra-op threads mostly spin-wait,
    # so one thread is several times faster here. Restored afterwards for the other test files.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _key(k: str | tuple) -> str:
    return k if isinstance(k, str) else f"{k[0]}({', '.join(f'{a}={b}' for a, b in k[1])})"


def test_width_mult_formula_is_independent() -> None:
    assert vgg_a_params() == 9_750_922 and vgg_a_params(batchnorm=True) == 9_756_426
    assert vgg_a_params(0.25) < 1_000_000


@pytest.mark.parametrize("key", list(EXPECTED_PARAMS), ids=_key)
def test_param_counts(key: str | tuple) -> None:
    name, options = (key, {}) if isinstance(key, str) else (key[0], dict(key[1]))
    assert count_params(create(name, **options)) == EXPECTED_PARAMS[key]


def test_every_registered_model_has_an_expected_count() -> None:
    counted = {k if isinstance(k, str) else k[0] for k in EXPECTED_PARAMS}
    assert set(list_models()) <= counted


@pytest.mark.parametrize("name", list_models())
def test_forward_shape(name: str) -> None:
    torch.manual_seed(0)
    model = create(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["quick_cnn", "vgg_a_bn", "vgg_a_light", "mynet", "resnet18"])
def test_num_classes_100(name: str) -> None:
    with torch.no_grad():
        assert create(name, num_classes=100).eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def _loss_no_dropout(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Train mode (BN uses the batch's own statistics, deterministic) but dropout off, so before/after compare
    # the same function.
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    return nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("name", list_models())
def test_one_step_lowers_loss(name: str) -> None:
    torch.manual_seed(0)
    model = create(name)
    n = 2 if name in BIG else 8
    x, y = torch.randn(n, 3, 32, 32), torch.arange(n) % 10
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = _loss_no_dropout(model, x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = _loss_no_dropout(model, x, y)
    assert after.item() < loss.item()


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="vgg_a_bn"):
        create("vgg_z")


def test_unknown_option() -> None:
    with pytest.raises(ConfigError, match="width_mult"):
        create("vgg_a", widht_mult=2)


@pytest.mark.parametrize("name", ["quick_cnn", "vgg_a"])
def test_bad_activation_lists_choices(name: str) -> None:
    with pytest.raises(ConfigError, match="mish"):
        create(name, activation="relu7")


@pytest.mark.parametrize(("option", "value"), [("norm", "layernorm"), ("init", "he"), ("dropout", 1.5)])
def test_bad_option_values(option: str, value: object) -> None:
    with pytest.raises(ConfigError):
        create("quick_cnn", **{option: value})


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("resnet18", {"activation": "relu7"}),
        ("resnet18", {"norm": "groupnorm"}),
        ("resnet18", {"depths": (2, 2)}),  # one depth per width
        ("densenet121", {"init": "he"}),
        ("dpn26", {"dropout": -0.1}),
        ("mynet", {"kernel_size": 4}),
        ("mynet", {"padding": -1}),
        ("vgg_a", {"width_mult": 0}),
        ("vgg_a", {"cfg": (64, "X")}),
        ("quick_cnn", {"widths": (8, 0, 8)}),
        ("quick_cnn", {"widths": (8,) * 6}),
        ("improved_cnn", {"hidden_norm": "layernorm"}),
        ("cnn3", {"activation": "relu", "negative_slope": 0.2}),
        ("resnext29_32x4d", {"cardinality": 0}),
        ("resnext29_32x4d", {"stem_kernel": 2}),
        ("mobilenetv2", {"width_mult": -1.0}),
    ],
)
def test_bad_zoo_option_values(name: str, options: dict) -> None:
    with pytest.raises(ConfigError, match=name):
        create(name, **options)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("resnet3stage", {"activation": "relu"}),
        ("resnet3stage", {"activation": "swish"}),
        ("resnet3stage", {"activation": "gelu"}),
        ("resnet3stage", {"activation": "mish"}),
        ("resnet18", {"norm": "none", "widths": (8, 16, 32, 64)}),
        ("preact_resnet18", {"final_act": True, "widths": (8, 16, 32, 64), "dropout": 0.2}),
        ("resnet50", {"widths": (4, 8, 16, 32), "depths": (1, 1, 1, 1), "activation": "elu"}),
        ("vgg_a", {"norm": "batchnorm", "residual": True, "width_mult": 0.25, "activation": "prelu"}),
        ("vgg_a", {"hidden": (64,), "cfg": (16, "M", 32, "M", 32, "M"), "init": "kaiming_normal"}),
        ("vgg_a_leaky", {"activation_kwargs": {"negative_slope": 0.3}, "width_mult": 0.125}),
        ("basic_cnn", {"kernel_size": 5, "norm": "batchnorm", "dropout": 0.3, "hidden": (128, 64)}),
        ("improved_cnn", {"widths": (8, 16, 16, 32), "hidden_norm": "none", "init": "orthogonal"}),
        ("residual_cnn", {"widths": (8, 16, 32), "residual": False, "pool_size": 2}),
        ("mynet", {"kernel_size": 3, "activation": "tanh", "hidden": (64, 32)}),
        ("cnn3", {"filters": (16, 32, 64), "hidden": (64,), "activation": "silu"}),
        ("densenet121", {"growth_rate": 8, "depths": (2, 2, 2, 2)}),
        ("dpn26", {"depths": (1, 1, 1, 1), "activation": "gelu"}),
        ("dla", {"activation": "silu", "norm": "none"}),
        ("resnext29_32x4d", {"cardinality": 4, "bottleneck_width": 4, "stem_kernel": 3}),
        ("mobilenetv2", {"width_mult": 0.5, "residual": False}),
        ("vgg11", {"width_mult": 0.25, "dropout": 0.3, "norm": "none"}),
        ("quick_cnn", {"convs_per_stage": 2, "widths": (8, 16, 32), "dropout": 0.1, "init": "orthogonal"}),
    ],
)
def test_option_variants_build_and_run(name: str, options: dict) -> None:
    torch.manual_seed(0)
    model = create(name, **options).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck, PreActBlock])
@pytest.mark.parametrize(("cin", "stride"), [(16, 1), (8, 2)])
def test_shortcut_wiring(block: type[nn.Module], cin: int, stride: int) -> None:
    """With the residual branch's last layer zeroed, a block reduces to its shortcut (then act, post-act nets)."""
    torch.manual_seed(0)
    blk = block(cin, 16, stride).eval()
    last = [m for m in blk.body if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))][-1]
    nn.init.zeros_(last.weight)
    x = torch.randn(2, cin, 8, 8)
    with torch.no_grad():
        short = x if cin == 16 and stride == 1 else blk.shortcut(blk.pre(x) if block is PreActBlock else x)
        expected = short if block is PreActBlock else torch.relu(short)
        assert torch.allclose(blk(x), expected, atol=1e-6)
        blk.shortcut = None  # residual off: the zeroed branch leaves nothing
        assert torch.count_nonzero(blk(x)) == 0


def test_quick_cnn_layers() -> None:
    types = [type(m).__name__ for m in create("quick_cnn")]
    stage = ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert types == stage * 3 + ["AdaptiveMaxPool2d", "Flatten", "Linear"]
    assert not any(m.bias is not None for m in create("quick_cnn") if isinstance(m, nn.Conv2d))


def test_layer_table_counts_shared_modules_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Flatten(), shared, nn.ReLU(), shared)
    rows = layer_table(model, (1, 4))
    assert [r["name"] for r in rows] == ["0", "1", "2", "1"]
    assert sum(r["params"] for r in rows) == count_params(model) == 20


def test_residual_off_drops_exactly_the_projection_shortcuts() -> None:
    projections = sum(cin * cout + 2 * cout for cin, cout in ((64, 128), (128, 256), (256, 512)))
    assert count_params(create("resnet18", residual=False)) == 11_173_962 - projections


def test_vgg_a_res_adds_identity_shortcuts_only() -> None:
    torch.manual_seed(0)
    plain, res = create("vgg_a_bn_dropout"), create("vgg_a_bn_dropout_res")
    # Same parameter names and shapes, so the weights transfer; identity shortcuts on the 4 equal-width convs.
    res.load_state_dict(plain.state_dict())
    assert sum(getattr(m, "residual", False) is True for m in res.modules()) == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x), res.eval()(x))


def test_vgg_a_dropout_placement() -> None:
    types = [type(m).__name__ for m in create("vgg_a_dropout").classifier]
    assert types == ["Flatten", "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    assert all(m.p == 0.5 for m in create("vgg_a_bn_dropout").modules() if isinstance(m, nn.Dropout))
    assert not any(isinstance(m, nn.Dropout) for m in create("vgg_a").modules())


def test_descriptions_and_model_info() -> None:
    for name in list_models():
        assert get_entry(name).description
    info = model_info("quick_cnn")
    assert (info["name"], info["params"]) == ("quick_cnn", 94_762)
    assert info["macs"] == count_macs(create("quick_cnn"))
    assert "quick" in info["description"]


def test_negative_slope_only_for_leaky() -> None:
    leaky = create("vgg_a_leaky", negative_slope=0.2)
    assert next(m for m in leaky.modules() if isinstance(m, nn.LeakyReLU)).negative_slope == 0.2
    with pytest.raises(ConfigError, match="leaky_relu"):
        create("vgg_a", negative_slope=0.2)
    slopes = {m.negative_slope for m in create("cnn3").modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}


ACTIVATION_TYPES = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU,
    "prelu": nn.PReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish,
    "softplus": nn.Softplus, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "hardtanh": nn.Hardtanh,
    "softmax": nn.Softmax,
}


def test_activation_list_is_complete() -> None:
    assert set(ACTIVATIONS) == set(ACTIVATION_TYPES)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_each_activation_builds_and_runs(act: str) -> None:
    x = torch.linspace(-3, 3, 14).reshape(1, 2, 7)
    module = make_activation(act)
    assert type(module) is ACTIVATION_TYPES[act]
    ref = ACTIVATION_TYPES[act](1) if act == "softmax" else ACTIVATION_TYPES[act]()
    assert torch.allclose(module(x.clone()), ref(x))
    with torch.no_grad():
        model = create("quick_cnn", activation=act, widths=(4, 4, 4)).eval()
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_softmax_activation_is_over_channels() -> None:
    x = torch.randn(2, 5, 3, 3)
    y = make_activation("softmax")(x)
    assert torch.allclose(y.sum(1), torch.ones(2, 3, 3))  # each position's channels sum to 1
    assert torch.allclose(y, x.softmax(1))
    model = create("mynet", activation="softmax")
    assert count_params(model) == 152_820  # no parameters of its own
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_hidden_fc_head_layout_on_a_pooled_family() -> None:
    head = create("resnet18", hidden=(256, 128), dropout=0.5, activation="gelu").head
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["AdaptiveAvgPool2d", "Flatten", "Dropout", "Linear", "GELU", "Dropout", "Linear", "GELU",
                     "Dropout", "Linear"]
    assert [m.out_features for m in head if isinstance(m, nn.Linear)] == [256, 128, 10]
    plain = create("resnet18", dropout=0.5).head  # no hidden: the old head exactly
    assert [type(m).__name__ for m in plain] == ["AdaptiveAvgPool2d", "Flatten", "Dropout", "Linear"]
    with pytest.raises(ConfigError, match=r"^model 'densenet121': hidden must be a positive integer"):
        create("densenet121", hidden=(0,))


def test_per_conv_kernel_sizes_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^model 'mynet': kernel_size \[5, 3, 3\] needs one value per conv \(2\)$"):
        create("mynet", kernel_size=[5, 3, 3])
    with pytest.raises(ConfigError, match=r"^model 'cnn3': kernel_size must be an odd integer"):
        create("cnn3", kernel_size=[3, 4, 3])
    m = create("mynet", kernel_size=[5, 3], hidden=500)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5), (3, 3)] and [c.padding for c in convs] == [(0, 0), (0, 0)]


def test_leaky_slope_and_bad_activation() -> None:
    assert make_activation("leaky_relu", slope=0.3)(torch.tensor([-1.0])).item() == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="gelu"):
        make_activation("nope")
    with pytest.raises(ValueError, match="batchnorm"):
        make_norm2d("groupnorm", 4)
    assert isinstance(make_norm2d("none", 4), nn.Identity)


def _big_layer() -> nn.Module:
    return nn.Sequential(nn.Linear(400, 300), nn.Conv2d(64, 128, 3), nn.BatchNorm2d(8))


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_init_schemes(scheme: str) -> None:
    torch.manual_seed(0)
    model = _big_layer()
    with torch.no_grad():  # perturb BN so the reset to weight 1 / bias 0 is visible
        model[2].weight.fill_(3.0)
        model[2].bias.fill_(2.0)
    before = model[0].weight.clone()
    init_weights(model, scheme)
    lin, conv, bn = model[0], model[1], model[2]
    if scheme == "default":
        assert torch.equal(lin.weight, before)
        return
    assert not torch.equal(lin.weight, before)
    assert torch.count_nonzero(lin.bias) == 0 and torch.count_nonzero(conv.bias) == 0
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    fan_in, fan_out = 400, 300
    expected_std = {
        "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
        "xavier_uniform": math.sqrt(2 / (fan_in + fan_out)),
        "kaiming_uniform": math.sqrt(2 / fan_in),
        "kaiming_normal": math.sqrt(2 / fan_out),  # fan_out mode, as torchvision / kuangliu ResNets
    }
    if scheme in expected_std:
        assert lin.weight.std().item() == pytest.approx(expected_std[scheme], rel=0.1)
        # Uniform schemes stay inside sqrt(3) * std; among 120k normal draws some land outside it.
        outside = (lin.weight.abs() > math.sqrt(3) * expected_std[scheme] * 1.001).any().item()
        assert outside == scheme.endswith("normal")
    if scheme == "orthogonal":
        w = lin.weight  # 300 x 400: rows orthonormal
        assert torch.allclose(w @ w.T, torch.eye(300), atol=1e-4)


def test_vgg_a_uses_xavier_normal_by_default() -> None:
    torch.manual_seed(0)
    fc = create("vgg_a").classifier[1]
    assert isinstance(fc, nn.Linear) and torch.count_nonzero(fc.bias) == 0
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.1)


def test_macs_quick_cnn() -> None:
    hand = 32 * 3 * 9 * 32 * 32 + 64 * 32 * 9 * 16 * 16 + 128 * 64 * 9 * 8 * 8 + 128 * 10
    assert count_macs(create("quick_cnn")) == hand


def test_macs_vgg_a() -> None:
    assert count_macs(create("vgg_a")) == vgg_a_macs() == 153_293_824


def test_layer_table_vgg_a() -> None:
    rows = layer_table(create("vgg_a"))
    assert sum(r["params"] for r in rows) == 9_750_922
    assert rows[-1]["output_shape"] == (1, 10) and rows[-1]["type"] == "Linear"
    text = format_layer_table(rows)
    assert "9,750,922" in text and "Conv2d" in text


def test_width_mult_is_one_option_for_every_family_with_a_width():
    from cifarlab.models import get_entry

    scaled = [n for n in list_models() if get_entry(n).width_target() is not None]
    assert {"quick_cnn", "cnn3", "resnet18", "densenet121", "resnext29_32x4d", "fast_net"} <= set(scaled)
    for name in scaled:
        full = count_params(create(name))
        assert count_params(create(name, width_mult=1.0)) == full, name  # 1.0 keeps the exact count
        assert "width_mult" in get_entry(name).options(), name
    assert count_params(create("quick_cnn", width_mult=0.5)) == count_params(create("quick_cnn", widths=[16, 32, 64]))
    assert count_params(create("resnet18", width_mult=0.25)) < count_params(create("resnet18")) / 10
    with pytest.raises(ConfigError, match="not both"):
        create("quick_cnn", width_mult=0.5, widths=[8, 8, 8])
    with pytest.raises(ConfigError, match="width_mult must be a number > 0"):
        create("quick_cnn", width_mult=0)
    with pytest.raises(ConfigError, match="has no option 'width_mult'"):
        create("dla", width_mult=0.5)
