"""Registries of optimizers, LR schedules and losses: listing, lookup, one working entry each, the keys they
declare, and the rule that optimizer-specific settings follow the optimizer."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.config import (
    LOSS_KEYS,
    OPTIMIZER_KEYS,
    SCHEDULE_KEYS,
    OptimConfig,
    build_section,
    load_config,
    merge_layer,
)
from cifarlab.engine.losses import LOSSES, build_loss, list_losses
from cifarlab.engine.optim import OPTIMIZERS, build_optimizer, list_optimizers
from cifarlab.engine.schedules import SCHEDULES, LRSchedule, list_schedules
from cifarlab.engine.scratch_optim import ScratchSGD, Signum
from cifarlab.errors import ConfigError
from cifarlab.models import get_entry, list_models
from cifarlab.registry import Registry

OPTIM_CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                 "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
                 "scratch_sgd": ScratchSGD, "signum": Signum}
TORCH_EPS = {"adam": 1e-8, "adamw": 1e-8, "rmsprop": 1e-8, "adagrad": 1e-10, "adadelta": 1e-6}


def test_listings_in_registration_order():
    assert list_optimizers() == [*OPTIM_CLASSES, "muon"]  # muon: tests/test_muon.py
    assert list_losses() == ["cross_entropy", "label_smoothing", "nll", "focal", "mse", "bce",
                             "multilabel_soft_margin"]
    assert list_schedules() == ["constant", "step", "multistep", "exponential", "plateau", "cosine",
                                "warmup_cosine", "warmup_linear", "linear", "cosine_restarts", "onecycle"]
    for registry in (OPTIMIZERS, LOSSES, SCHEDULES):
        assert all(e.description for e in registry), registry.kind
    assert OPTIMIZERS.entry("adadelta").keys == ("rho", "eps")
    assert {e.name for e in SCHEDULES if "epoch" in e.tags} == {"step", "multistep", "exponential", "plateau"}


@pytest.mark.parametrize(("key", "value", "choices"), [
    ("optim.name", "adamx", "'sgd', 'adam', 'adamw', 'rmsprop', 'adagrad', 'adadelta', 'scratch_sgd', 'signum', "
                            "'muon'"),
    ("loss.name", "huber", "'cross_entropy', 'label_smoothing', 'nll', 'focal', 'mse', 'bce', 'multilabel_soft"),
    ("sched.name", "triangle", "'constant', 'step', 'multistep', 'exponential', 'plateau', 'cosine', 'warmup_co"),
])
def test_unknown_names_give_one_line(key, value, choices):
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=[f"{key}={value}"])
    msg = str(exc.value)
    assert msg.startswith(f"config key '{key}': got '{value}' (str), expected one of {choices}")
    assert "\n" not in msg


def test_generic_registry():
    reg: Registry[object] = Registry("widget")

    @reg.register(keys=("a",))
    def blue():
        """A blue widget.

        More text."""

    assert reg.names() == ["blue"] and reg.get("blue") is blue and "blue" in reg
    assert reg.entry("blue").description == "A blue widget." and reg.entry("blue").keys == ("a",)
    with pytest.raises(ValueError, match="widget 'blue' registered twice"):
        reg.register("blue")(blue)
    with pytest.raises(ConfigError, match=r"^unknown widget 'red'; valid widgets: blue$"):
        reg.entry("red")
    # the model registry is the same class, its public API unchanged
    assert list_models() == sorted(list_models()) and "quick_cnn" in list_models()
    assert get_entry("quick_cnn").factory is get_entry("quick_cnn").obj and get_entry("quick_cnn").description
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; valid models: .*quick_cnn"):
        get_entry("nope")


def test_declared_optimizer_keys_exist_on_optimconfig():
    fields = {f.name for f in dataclasses.fields(OptimConfig)}
    declared = {k for e in OPTIMIZERS for k in e.keys}
    assert declared == {"momentum", "nesterov", "betas", "eps", "alpha", "rho", "muon_momentum", "muon_ns_steps",
                        "head_lr_mult"} and declared <= fields


# Per optimizer: settings for each declared key (away from the default) and what the torch group must hold.
KEY_VALUES = {"momentum": 0.5, "nesterov": True, "betas": [0.8, 0.99], "eps": 1e-3, "alpha": 0.9, "rho": 0.8}


@pytest.mark.parametrize("name", list(OPTIM_CLASSES))
def test_every_optimizer_builds_and_steps(name):
    keys = OPTIMIZERS.entry(name).keys
    overrides = [f"optim.name={name}", "optim.lr=0.1", "optim.weight_decay=0.01"]
    overrides += [f"optim.{k}={str(KEY_VALUES[k]).lower()}" for k in keys]
    cfg = load_config(overrides=overrides).optim
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, cfg)
    assert type(opt) is OPTIM_CLASSES[name]
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["weight_decay"] == 0.01
    for k in keys:
        assert group[k] == (tuple(KEY_VALUES[k]) if k == "betas" else KEY_VALUES[k]), k
    if "eps" in keys:  # null: torch's own default of that optimizer
        assert build_optimizer(model, load_config(overrides=[f"optim.name={name}"]).optim).param_groups[0]["eps"] \
            == TORCH_EPS[name]
    before = model.weight.detach().clone()
    model(torch.ones(4, 3)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight)


def test_registries_agree_with_the_schema_declarations():
    for registry, declared in ((OPTIMIZERS, OPTIMIZER_KEYS), (LOSSES, LOSS_KEYS), (SCHEDULES, SCHEDULE_KEYS)):
        assert registry.undeclared() == [] and registry.names() == list(declared), registry.kind
        assert all(registry.entry(n).keys == keys for n, keys in declared.items()), registry.kind
    with pytest.raises(ValueError, match=r"optimizer 'nadam' with keys \(\) is not declared so in cifarlab.config"):
        OPTIMIZERS.register("nadam")(lambda groups, cfg: None)
    with pytest.raises(ValueError, match=r"optimizer 'sgd' with keys \('momentum',\) is not declared so"):
        Registry("optimizer", declared=OPTIMIZER_KEYS).register("sgd", keys=("momentum",))(lambda g, c: None)
    assert Registry("optimizer", declared=OPTIMIZER_KEYS).undeclared() == list(OPTIMIZER_KEYS)


def test_adding_an_optimizer_is_one_declaration_and_one_entry(monkeypatch):
    monkeypatch.setattr(OPTIMIZERS, "_entries", dict(OPTIMIZERS._entries))
    monkeypatch.setitem(OPTIMIZER_KEYS, "plain_sgd", ())
    OPTIMIZERS.register("plain_sgd", "SGD without momentum")(
        lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, weight_decay=cfg.weight_decay))
    cfg = load_config(overrides=["optim.name=plain_sgd", "optim.lr=0.3"]).optim
    opt = build_optimizer(nn.Linear(2, 1), cfg)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0
    with pytest.raises(ConfigError, match=r"'optim.nesterov': true applies to sgd, scratch_sgd or muon only"):
        load_config(overrides=["optim.name=plain_sgd", "optim.nesterov=true"])


def loss_overrides(name: str) -> list[str]:
    return [f"loss.name={name}"] + (["loss.label_smoothing=0.1"] if name == "label_smoothing" else [])


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_is_finite_and_hard_equals_one_hot(name):
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(6, 10, generator=g), torch.randint(0, 10, (6,), generator=g)
    loss = build_loss(load_config(overrides=loss_overrides(name)).loss)
    hard, soft = loss(logits, y), loss(logits, F.one_hot(y, 10).float())
    assert hard.shape == () and math.isfinite(float(hard)) and float(hard) > 0
    assert float(hard) == pytest.approx(float(soft), rel=1e-6)
    if name in ("cross_entropy", "nll"):
        assert float(hard) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)


SCHED_EXTRA = {"multistep": ["sched.milestones=[3]"], "step": ["sched.step_size=2"],
               "warmup_cosine": ["sched.warmup_epochs=1"], "warmup_linear": ["sched.warmup_epochs=1"]}


@pytest.mark.parametrize("name", list_schedules())
def test_every_schedule_builds(name):
    cfg = load_config(overrides=[f"sched.name={name}", "train.epochs=6", "optim.lr=0.1", *SCHED_EXTRA.get(name, [])])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    sched = LRSchedule(opt, cfg.sched, cfg.train.epochs, steps_per_epoch=4)
    assert sched.interval == ("epoch" if "epoch" in SCHEDULES.entry(name).tags else "step")
    lrs = [sched.apply(s) for s in range(24)]
    assert all(0 < lr <= 0.1 + 1e-12 for lr in lrs)
    if name in ("constant", "plateau"):
        assert lrs == [0.1] * 24
    elif name != "onecycle" and "warmup" not in name:
        assert lrs[0] == 0.1 and lrs[-1] < 0.1  # no warm-up by default; every decay decays


# ---------------------------------------------------------------------------------------------------------------
# Optimizer-specific settings follow the optimizer


def test_switching_a_preset_to_another_optimizer_just_works(tmp_path):
    quick = load_config("quick")
    assert quick.optim.name == "sgd" and quick.optim.nesterov is True
    adam = load_config("quick", overrides=["optim.name=adam"]).optim
    assert (adam.name, adam.nesterov, adam.momentum) == ("adam", False, 0.9)
    assert adam.lr == quick.optim.lr and adam.weight_decay == quick.optim.weight_decay  # shared settings stay
    f = tmp_path / "adamw.yaml"
    f.write_text("optim: {name: adamw, betas: [0.9, 0.95]}\n")
    assert load_config("quick", files=[f]).optim.betas == (0.9, 0.95)  # a file is a layer too
    # settings that apply to the new optimizer are kept: fast's momentum 0.85 goes to signum, not to adam
    assert load_config("fast", overrides=["optim.name=signum"]).optim.momentum == 0.85
    assert load_config("fast", overrides=["optim.name=adam"]).optim.momentum == 0.9


@pytest.mark.parametrize("overrides", [["optim.name=adam", "optim.nesterov=true"],
                                       ["optim.nesterov=true", "optim.name=adam"]])
def test_a_setting_given_with_another_optimizer_is_refused(overrides):
    msg = ("config key 'optim.nesterov': true applies to sgd, scratch_sgd or muon only (optim.name is 'adam'); "
           "leave optim.nesterov out (or set optim.nesterov=false), or use optim.name=sgd")
    with pytest.raises(ConfigError) as exc:
        load_config("quick", overrides=overrides)
    assert str(exc.value) == msg
    with pytest.raises(ConfigError, match=r"^config key 'optim.betas': \[0.8, 0.9\] applies to adam or adamw only "
                                          r"\(optim.name is 'sgd'\); leave optim.betas out \(or set "
                                          r"optim.betas=\[0.9, 0.999\]\), or use optim.name=adam$"):
        load_config(overrides=["optim.betas=[0.8, 0.9]"])


def test_merge_layer_drops_only_other_optimizers_settings():
    base = {"optim": {"name": "sgd", "lr": 0.2, "momentum": 0.8, "nesterov": True, "eps": 1e-3}}
    said: list[str] = []
    merged = merge_layer(base, {"optim": {"name": "rmsprop"}}, {"optim": {"alpha": 0.9}}, log=said.append)
    assert merged == {"optim": {"name": "rmsprop", "lr": 0.2, "eps": 1e-3, "alpha": 0.9}}
    assert said == ["optim.name=rmsprop (was sgd): dropped optim.momentum=0.8, optim.nesterov=true, which rmsprop "
                    "does not take"]
    merge_layer(base, {"optim": {"name": "adam", "lr": 0.1}}, log=said.append)
    merge_layer({"optim": {"name": "sgd", "lr": 0.1}}, {"optim": {"name": "adam"}}, log=said.append)
    assert len(said) == 2  # the second dropped nothing: no line
    fast: list[str] = []
    load_config("fast", overrides=["optim.name=signum"], log=fast.append)  # signum takes fast's momentum
    assert fast == ["optim.name=signum (was sgd): dropped optim.nesterov=true, which signum does not take"]
    assert merge_layer(base, {"optim": {"lr": 0.1}}) == {"optim": {**base["optim"], "lr": 0.1}}  # same optimizer


def test_build_section_is_public():
    cfg = build_section(OptimConfig, {"name": "adam", "betas": [0.8, 0.9]}, "optim")
    assert cfg == OptimConfig(name="adam", betas=(0.8, 0.9))
    with pytest.raises(ConfigError, match=r"^unknown config key 'optim.nope'; valid keys here: name, lr,"):
        build_section(OptimConfig, {"nope": 1}, "optim")


def test_config_imports_without_torch():
    code = "import sys, cifarlab.config; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
