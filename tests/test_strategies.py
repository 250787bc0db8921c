"""Training strategies, unit by unit, against independent formulas and torch's reference implementations:
losses (hard and soft targets), L1/L2 vs weight decay, parameter groups, scratch optimizers, Lookahead, LR
schedules, EMA/SWA, mixup/cutmix, test-time augmentation, and the config keys that select them.
Tiny tensors only: the whole file runs in a few seconds."""

from __future__ import annotations

import math
import random
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.config import load_config
from cifarlab.data.augment import BatchAugment
from cifarlab.engine.averaging import EMA, SWA, update_bn
from cifarlab.engine.evaluate import evaluate
from cifarlab.engine.losses import build_loss
from cifarlab.engine.mixing import BatchMixer, cutmix, cutmix_box, mixup
from cifarlab.engine.optim import Lookahead, build_optimizer, build_regularizer
from cifarlab.engine.schedules import LRSchedule
from cifarlab.engine.scratch_optim import ScratchSGD, Signum
from cifarlab.engine.tta import tta_probs, tta_views
from cifarlab.errors import ConfigError

K = 10


def loss_of(*overrides: str) -> nn.Module:
    return build_loss(load_config(overrides=list(overrides)).loss)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, K, generator=g) * 3
    y = torch.randint(0, K, (16,), generator=g)
    return logits, y


# ----------------------------------------------------------------------------------------------------------------
# Losses


def test_focal_gamma0_equals_ce_and_closed_form(batch):
    logits, y = batch
    ce = F.cross_entropy(logits, y)
    assert loss_of("loss.name=focal", "loss.focal_gamma=0")(logits, y) == pytest.approx(float(ce), rel=1e-6)
    # gamma 2 with per-class alpha: -alpha_y (1 - p_y)^2 log p_y, written out per sample
    alpha = [0.1 * (k + 1) for k in range(K)]
    loss = loss_of("loss.name=focal", "loss.focal_gamma=2", f"loss.focal_alpha={alpha}")(logits, y)
    p = logits.softmax(1)
    expected = sum(-alpha[int(y[i])] * (1 - p[i, y[i]]) ** 2 * math.log(p[i, y[i]]) for i in range(16)) / 16
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    scalar = loss_of("loss.name=focal", "loss.focal_gamma=0", "loss.focal_alpha=0.25")(logits, y)
    assert float(scalar) == pytest.approx(0.25 * float(ce), rel=1e-6)


def test_label_smoothing_zero_is_ce_and_eps_is_closed_form(batch):
    logits, y = batch
    ce = float(F.cross_entropy(logits, y))
    assert float(loss_of("loss.label_smoothing=0")(logits, y)) == pytest.approx(ce, rel=1e-7)
    eps = 0.2
    logp = logits.log_softmax(1)
    # (1-eps) * CE + eps * mean over classes of -log p_k
    expected = float(((1 - eps) * -logp.gather(1, y[:, None]).squeeze(1) + eps * -logp.mean(1)).mean())
    for name in ("cross_entropy", "label_smoothing", "nll"):
        got = loss_of(f"loss.name={name}", f"loss.label_smoothing={eps}")(logits, y)
        assert float(got) == pytest.approx(expected, rel=1e-6), name


def test_nll_on_log_softmax_equals_ce(batch):
    logits, y = batch
    assert float(loss_of("loss.name=nll")(logits, y)) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-7)


def test_mse_bce_multilabel_against_independent_formulas(batch):
    logits, y = batch
    onehot = torch.zeros(16, K)
    onehot[torch.arange(16), y] = 1
    b = 16
    # mse: per-sample sum of squares, batch mean (= K * nn.MSELoss())
    mse_logits = sum(float(((logits[i] - onehot[i]) ** 2).sum()) for i in range(b)) / b
    assert float(loss_of("loss.name=mse", "loss.mse_on=logits")(logits, y)) == pytest.approx(mse_logits, rel=1e-6)
    assert mse_logits == pytest.approx(K * float(nn.MSELoss()(logits, onehot)), rel=1e-6)
    sm = logits.softmax(1)
    mse_sm = float(((sm - onehot) ** 2).sum() / b)
    assert float(loss_of("loss.name=mse", "loss.mse_on=softmax")(logits, y)) == pytest.approx(mse_sm, rel=1e-6)
    # bce: -(t log sigmoid(z) + (1-t) log(1 - sigmoid(z))) summed over classes, batch mean
    s = torch.sigmoid(logits.double())
    bce = float(-(onehot * s.log() + (1 - onehot) * (1 - s).log()).sum() / b)
    assert float(loss_of("loss.name=bce")(logits, y)) == pytest.approx(bce, rel=1e-5)
    mlsm = loss_of("loss.name=multilabel_soft_margin")(logits, y)
    assert float(mlsm) == pytest.approx(bce / K, rel=1e-5)
    assert float(mlsm) == pytest.approx(float(nn.MultiLabelSoftMarginLoss()(logits, onehot)), rel=1e-6)


@pytest.mark.parametrize("name", ["cross_entropy", "nll", "focal", "mse", "bce", "multilabel_soft_margin"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_soft_one_hot_targets_equal_hard_targets(batch, name, eps):
    logits, y = batch
    fn = loss_of(f"loss.name={name}", f"loss.label_smoothing={eps}")
    hard, soft = fn(logits, y), fn(logits, F.one_hot(y, K).float())
    assert float(soft) == pytest.approx(float(hard), rel=1e-6, abs=1e-7)


def test_soft_targets_are_a_mixture_for_ce(batch):
    logits, y = batch
    y2 = y.roll(1)
    t = 0.3 * F.one_hot(y, K).float() + 0.7 * F.one_hot(y2, K).float()
    expected = 0.3 * F.cross_entropy(logits, y) + 0.7 * F.cross_entropy(logits, y2)
    assert float(loss_of()(logits, t)) == pytest.approx(float(expected), rel=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Parameter groups, L1/L2, weight decay


def small_net(seed: int = 0, bn: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, K)]
    return nn.Sequential(*layers)


def fixed_data(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, K, (n,), generator=g)


def optim_cfg(*overrides: str):
    return load_config(overrides=list(overrides)).optim


def test_no_decay_bn_bias_groups_and_penalty():
    net = small_net()
    cfg = optim_cfg("optim.no_decay_bn_bias=true", "optim.weight_decay=0.01", "optim.l1=0.001", "optim.l2=0.1")
    groups = build_optimizer(net, cfg).param_groups
    assert [g["name"] for g in groups] == ["weights", "bn_bias"]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim <= 1 for p in groups[1]["params"])
    assert len(groups[0]["params"]) == 2 and len(groups[1]["params"]) == 4  # conv+fc kernels; biases, BN w/b
    ids = {id(p) for g in groups for p in g["params"]}
    assert ids == {id(p) for p in net.parameters()}
    kernels = [net[0].weight, net[5].weight]
    expected = sum(0.001 * float(w.detach().abs().sum()) + 0.05 * float((w.detach() ** 2).sum()) for w in kernels)
    assert float(build_regularizer(net, cfg)().detach()) == pytest.approx(expected, rel=1e-6)
    everything = sum(0.001 * float(w.detach().abs().sum()) + 0.05 * float((w.detach() ** 2).sum())
                     for w in net.parameters())
    cfg_all = optim_cfg("optim.l1=0.001", "optim.l2=0.1")
    assert float(build_regularizer(net, cfg_all)().detach()) == pytest.approx(everything, rel=1e-6)
    assert len(build_optimizer(net, cfg_all).param_groups) == 1
    assert build_regularizer(net, optim_cfg()) is None


def test_bn_bias_lr_mult_gives_per_group_lrs_through_the_schedule():
    net = small_net()
    cfg = load_config(overrides=["optim.lr=0.1", "optim.bn_bias_lr_mult=4", "sched.name=cosine", "train.epochs=4"])
    opt = build_optimizer(net, cfg.optim)
    assert [g["lr"] for g in opt.param_groups] == [0.1, pytest.approx(0.4)]
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 5e-4]  # decay untouched unless asked
    sched = LRSchedule(opt, cfg.sched, 4, 10)
    sched.apply(20)  # half way: cosine factor 0.5
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.05), pytest.approx(0.2)]


def _one_step(name: str, wd: float, l2: float, steps: int = 1) -> list[torch.Tensor]:
    net = small_net(bn=False)
    cfg = optim_cfg(f"optim.name={name}", "optim.lr=0.01", f"optim.weight_decay={wd}", f"optim.l2={l2}")
    opt, reg = build_optimizer(net, cfg), build_regularizer(net, cfg)
    x, y = fixed_data()
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        (loss + reg() if reg else loss).backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


def test_l2_in_loss_vs_coupled_and_decoupled_weight_decay():
    lam = 0.1
    # gradient level: d/dw (loss + l2/2 |w|^2) = grad + l2 * w, which is what coupled weight_decay adds
    net = small_net(bn=False)
    x, y = fixed_data()
    reg = build_regularizer(net, optim_cfg(f"optim.l2={lam}"))
    g_plain = torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))
    g_l2 = torch.autograd.grad(F.cross_entropy(net(x), y) + reg(), list(net.parameters()))
    for p, a, b in zip(net.parameters(), g_plain, g_l2):
        torch.testing.assert_close(b, a + lam * p, rtol=1e-6, atol=1e-7)
    # Adam: weight_decay (coupled) == l2 in the loss; AdamW (decoupled) is a different update
    adam_wd = _one_step("adam", lam, 0.0, steps=3)
    adam_l2 = _one_step("adam", 0.0, lam, steps=3)
    adamw = _one_step("adamw", lam, 0.0, steps=3)
    for a, b in zip(adam_wd, adam_l2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert max(float((a - b).abs().max()) for a, b in zip(adam_wd, adamw)) > 1e-4
    # SGD as well: coupled weight decay == l2 (both are the gradient g + lam*w)
    for a, b in zip(_one_step("sgd", lam, 0.0, 3), _one_step("sgd", 0.0, lam, 3)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "scratch_sgd", "signum"])
def test_every_optimizer_reduces_the_loss(name):
    net = small_net(bn=False)
    lr = {"adadelta": 1.0, "signum": 0.01, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.003}.get(name, 0.1)
    cfg = optim_cfg(f"optim.name={name}", f"optim.lr={lr}")
    opt = build_optimizer(net, cfg)
    x, y = fixed_data(32)
    first = float(F.cross_entropy(net(x), y).detach())
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    assert float(F.cross_entropy(net(x), y).detach()) < 0.85 * first, name


# ----------------------------------------------------------------------------------------------------------------
# Optimizers from scratch


@pytest.mark.parametrize(("momentum", "nesterov", "wd"), [(0.0, False, 0.0), (0.9, False, 5e-4), (0.9, True, 1e-3)])
def test_scratch_sgd_matches_torch_sgd(momentum, nesterov, wd):
    ours, ref = small_net(3), small_net(3)
    opt_ours = ScratchSGD(ours.parameters(), lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    for step in range(20):
        x, y = fixed_data(8, seed=100 + step)
        for net, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # and through the config: optim.name=scratch_sgd builds it
    cfg = optim_cfg("optim.name=scratch_sgd", "optim.nesterov=true")
    assert isinstance(build_optimizer(small_net(), cfg), ScratchSGD)


def test_signum_matches_hand_computed_update():
    w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = Signum([w], lr=0.01, momentum=0.9)
    w.grad = torch.tensor([0.3, -0.1, 0.0])
    opt.step()  # m = 0.1*g = [0.03, -0.01, 0]; w -= 0.01*sign(m)
    torch.testing.assert_close(w.data, torch.tensor([0.99, -1.99, 0.5]))
    w.grad = torch.tensor([-1.0, 0.2, 0.4])
    opt.step()  # m = 0.9*m + 0.1*g = [-0.073, 0.011, 0.04]
    torch.testing.assert_close(w.data, torch.tensor([1.0, -2.0, 0.49]))
    # weight decay is added to the gradient before the momentum: g = grad + 0.5*w
    v = nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = Signum([v], lr=0.1, momentum=0.0, weight_decay=0.5)
    v.grad = torch.tensor([-0.4, -0.6])  # g = [0.1, -1.1] -> sign [1, -1]
    opt.step()
    torch.testing.assert_close(v.data, torch.tensor([0.9, -0.9]))


def test_lookahead_after_k_steps_equals_formula_and_round_trips():
    k, alpha, lr = 3, 0.5, 0.1
    net, fast_only = small_net(bn=False), small_net(bn=False)
    la = Lookahead(torch.optim.SGD(net.parameters(), lr=lr), k=k, alpha=alpha)
    plain = torch.optim.SGD(fast_only.parameters(), lr=lr)
    phi0 = [p.detach().clone() for p in net.parameters()]
    x, y = fixed_data()
    for step in range(1, k + 1):
        for model, opt in ((net, la), (fast_only, plain)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        if step < k:  # before the sync, the fast weights are plain SGD's
            for a, b in zip(net.parameters(), fast_only.parameters()):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    # at step k: phi_1 = phi_0 + alpha * (theta_k - phi_0), and the fast weights restart from it
    for p, p0, theta in zip(net.parameters(), phi0, fast_only.parameters()):
        torch.testing.assert_close(p.data, p0 + alpha * (theta.data - p0), rtol=0, atol=1e-7)
    state = la.state_dict()
    other = Lookahead(torch.optim.SGD(small_net(5, bn=False).parameters(), lr=lr), k=k, alpha=alpha)
    other.load_state_dict(state)
    assert other.steps == k and all(torch.equal(a, b) for a, b in zip(other.slow, la.slow))
    # built from the config around any optimizer
    wrapped = build_optimizer(small_net(), optim_cfg("optim.name=adam", "optim.lookahead_k=5"))
    assert isinstance(wrapped, Lookahead) and isinstance(wrapped.optimizer, torch.optim.Adam)


# ----------------------------------------------------------------------------------------------------------------
# LR schedules (closed forms and torch's schedulers)


def make_sched(overrides, epochs=10, steps=5, lr=0.1, **kw):
    cfg = load_config(overrides=[f"optim.lr={lr}", f"train.epochs={epochs}", *overrides])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    return LRSchedule(opt, cfg.sched, cfg.train.epochs, steps, **kw), opt


def _torch_lrs(make_scheduler, epochs: int) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_multistep_and_exponential_match_torch_per_epoch():
    steps = 4
    ours, _ = make_sched(["sched.name=multistep", "sched.milestones=[2, 5, 7]", "sched.gamma=0.5"], steps=steps)
    assert ours.interval == "epoch"
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 7], gamma=0.5), 10)
    got = [ours.apply(e * steps + s) for e in range(10) for s in range(steps)]
    assert got == pytest.approx([lr for lr in ref for _ in range(steps)], rel=1e-12)
    ours, _ = make_sched(["sched.name=exponential", "sched.gamma=0.8"], steps=steps)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8), 10)
    assert [ours.apply(e * steps + steps - 1) for e in range(10)] == pytest.approx(ref, rel=1e-9)
    assert ours.apply(3 * steps) == pytest.approx(0.1 * 0.8**3)


@pytest.mark.parametrize(("t_0", "t_mult"), [(3, 1), (2, 2)])
def test_cosine_restarts_matches_torch_per_step(t_0, t_mult):
    epochs, steps = 12, 5
    ours, _ = make_sched(["sched.name=cosine_restarts", f"sched.t_0={t_0}", f"sched.t_mult={t_mult}",
                          "sched.min_lr=0.001"], epochs=epochs, steps=steps)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t_0, T_mult=t_mult, eta_min=0.001)
    for s in range(epochs * steps):
        ref.step(s / steps)  # torch's documented per-batch use: step(epoch + i / iters)
        assert ours.apply(s) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12), s


def test_warmup_cosine_and_warmup_linear_closed_forms():
    w, epochs, steps, lr, lo = 2, 10, 5, 0.1, 0.01
    cos, _ = make_sched(["sched.name=warmup_cosine", f"sched.warmup_epochs={w}", f"sched.min_lr={lo}"])
    lin, _ = make_sched(["sched.name=warmup_linear", f"sched.warmup_epochs={w}", f"sched.min_lr={lo}"])
    for s in range(w * steps):  # linear warm-up: (s+1) / (w*steps)
        assert cos.apply(s) == pytest.approx(lr * (s + 1) / (w * steps))
        assert lin.apply(s) == pytest.approx(lr * (s + 1) / (w * steps))
    for s in (10, 17, 33, 49):
        frac = (s / steps - w) / (epochs - w)
        assert cos.apply(s) == pytest.approx(lo + (lr - lo) * (1 + math.cos(math.pi * frac)) / 2)
        assert lin.apply(s) == pytest.approx(lo + (lr - lo) * (1 - frac))
    plain, _ = make_sched(["sched.name=cosine", f"sched.warmup_epochs={w}", f"sched.min_lr={lo}"])
    assert [plain.apply(s) for s in range(50)] == [cos.apply(s) for s in range(50)]


def test_plateau_reduces_after_patience_like_torch():
    ours, _ = make_sched(["sched.name=plateau", "sched.plateau_factor=0.5", "sched.plateau_patience=2",
                          "sched.min_lr=0.02"], epochs=20, steps=3)
    assert ours.interval == "epoch"
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2, min_lr=0.02)
    val_losses = [1.0, 0.9, 0.95, 0.91, 0.9, 0.92, 0.8, 0.8, 0.8, 0.8, 0.7, 0.75, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]
    reduced_at = []
    for epoch, v in enumerate(val_losses):
        assert ours.apply(epoch * 3) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), epoch
        if ours.plateau_step(v):
            reduced_at.append(epoch)
        ref.step(v)
    # best 0.9 at epoch 1; epochs 2, 3, 4 do not improve -> reduced after the 3rd (patience 2 tolerated)
    assert reduced_at[0] == 4
    assert ours.apply(len(val_losses) * 3) == pytest.approx(0.02)  # floored at min_lr
    # the state is what the checkpoint saves and restores
    fresh, _ = make_sched(["sched.name=plateau"], epochs=20, steps=3)
    fresh.load_state_dict(ours.state_dict())
    assert fresh.state_dict() == ours.state_dict()


@pytest.mark.parametrize("mode,threshold,cooldown", [("rel", 1e-3, 2), ("abs", 0.02, 2), ("rel", 1e-4, 0),
                                                     ("abs", 0.0, 3)])
def test_plateau_cooldown_and_threshold_mode_match_torch_step_for_step(mode, threshold, cooldown):
    # The schedulers report's protocol: factor 0.2, patience 3, threshold 1e-3, cooldown 2 (and abs variants).
    ours, _ = make_sched(["sched.name=plateau", "sched.plateau_factor=0.2", "sched.plateau_patience=1",
                          f"sched.plateau_threshold={threshold}", f"sched.plateau_threshold_mode={mode}",
                          f"sched.plateau_cooldown={cooldown}", "sched.min_lr=1e-6"], epochs=40, steps=2)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.2, patience=1, threshold=threshold,
                                                     threshold_mode=mode, cooldown=cooldown, min_lr=1e-6)
    gen = torch.Generator().manual_seed(0)
    val_losses = (1.0 + 0.05 * torch.randn(36, generator=gen) - torch.linspace(0, 0.3, 36)).tolist()
    val_losses[10:13] = [val_losses[9] * (1 - threshold / 2)] * 3  # improvements inside the threshold
    lrs_ours, lrs_ref = [], []
    for epoch, v in enumerate(val_losses):
        lrs_ours.append(ours.apply(epoch * 2))
        lrs_ref.append(opt.param_groups[0]["lr"])
        ours.plateau_step(v)
        ref.step(v)
        assert ours.plateau_cooldown_left == ref.cooldown_counter, epoch
        assert ours.plateau_bad_epochs == ref.num_bad_epochs, epoch
    assert lrs_ours == pytest.approx(lrs_ref, rel=1e-12)
    assert len(set(lrs_ref)) >= 3  # the sequence really exercises reductions (and cooldowns between them)


def test_plateau_cooldown_is_checked_and_checkpointed():
    with pytest.raises(ConfigError, match=r"'sched\.plateau_cooldown': got -1"):
        make_sched(["sched.name=plateau", "sched.plateau_cooldown=-1"])
    with pytest.raises(ConfigError, match="plateau_threshold_mode"):
        make_sched(["sched.name=plateau", "sched.plateau_threshold_mode=relative"])
    a, _ = make_sched(["sched.name=plateau", "sched.plateau_cooldown=2", "sched.plateau_patience=0"])
    a.plateau_step(1.0)
    a.plateau_step(1.0)
    assert a.plateau_cooldown_left == 2
    b, _ = make_sched(["sched.name=plateau"])
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()


def test_swa_lr_holds_the_lr_from_swa_start_epoch():
    sched, _ = make_sched(["sched.name=cosine"], epochs=10, steps=5, swa_start_epoch=8, swa_lr=0.03)
    assert sched.apply(34) == pytest.approx(0.05 + 0.05 * math.cos(math.pi * 34 / 50))
    assert [sched.apply(s) for s in (35, 40, 49)] == [pytest.approx(0.03)] * 3


# ----------------------------------------------------------------------------------------------------------------
# Weight averaging


def _set_weights(net: nn.Module, value_seed: int) -> None:
    g = torch.Generator().manual_seed(value_seed)
    with torch.no_grad():
        for t in list(net.parameters()) + [b for b in net.buffers() if b.is_floating_point()]:
            t.copy_(torch.randn(t.shape, generator=g))


def test_ema_after_k_steps_equals_closed_form():
    net, d, k = small_net(), 0.9, 5
    _set_weights(net, 0)
    w0 = {n: t.clone() for n, t in net.state_dict().items()}
    ema = EMA(net, d)
    snaps = []
    for i in range(1, k + 1):
        _set_weights(net, i)
        net[1].num_batches_tracked.fill_(i)
        snaps.append({n: t.clone() for n, t in net.state_dict().items()})
        ema.update(net)
    got = ema.state_dict()
    for name, t0 in w0.items():
        if not t0.is_floating_point():
            assert int(got[name]) == k  # integer buffers are copied
            continue
        closed = d**k * t0 + (1 - d) * sum(d ** (k - i) * snaps[i - 1][name] for i in range(1, k + 1))
        torch.testing.assert_close(got[name], closed, rtol=1e-5, atol=1e-6)
    assert "1.running_mean" in got  # BN buffers are averaged too


def test_swa_average_is_the_mean_of_snapshots_and_update_bn_recomputes_stats():
    net = small_net()
    swa = SWA(net)
    snaps = []
    for i in range(4):
        _set_weights(net, 10 + i)
        snaps.append({n: p.detach().clone() for n, p in net.named_parameters()})
        swa.update(net)
    assert swa.n_averaged == 4
    for name, p in swa.module.named_parameters():
        torch.testing.assert_close(p, sum(s[name] for s in snaps) / 4, rtol=1e-6, atol=1e-7)
    # BN statistics: exact mean over all batches (equal sizes), whatever the momentum
    bn = nn.Sequential(nn.BatchNorm2d(3)).eval()
    batches = [torch.randn(4, 3, 5, 5) + i for i in range(3)]
    update_bn(bn, batches)
    torch.testing.assert_close(bn[0].running_mean, torch.cat(batches).mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    assert bn[0].momentum == 0.1 and not bn.training


# ----------------------------------------------------------------------------------------------------------------
# Mixup / cutmix


def test_mixup_targets_sum_to_one_and_ce_is_the_mixture(batch):
    logits, y = batch
    x = torch.randn(16, 3, 8, 8)
    lam = 0.3
    mixed, t = mixup(x, y, lam)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    torch.testing.assert_close(t.sum(1), torch.ones(16))
    expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y.flip(0))
    assert float(loss_of()(logits, t)) == pytest.approx(float(expected), rel=1e-6)
    # the mixer draws lam ~ Beta(alpha, alpha) on the host, reproducibly, and reports the dominant label
    mixer = BatchMixer(mixup_alpha=0.4)
    x1, t1, y_acc = mixer(x, y, random.Random(7))
    lam1 = random.Random(7)
    lam1.random()  # mix_prob draw
    lam_expected = lam1.betavariate(0.4, 0.4)
    torch.testing.assert_close(x1, lam_expected * x + (1 - lam_expected) * x.flip(0))
    assert torch.equal(y_acc, y if lam_expected >= 0.5 else y.flip(0))
    torch.testing.assert_close(t1.sum(1), torch.ones(16))
    # mix_prob 0: untouched batch with hard targets
    x2, t2, _ = BatchMixer(mixup_alpha=0.4, mix_prob=0.0)(x, y, random.Random(0))
    assert x2 is x and t2 is y


def test_cutmix_lambda_is_the_kept_area_fraction():
    b = 6
    x = torch.arange(b, dtype=torch.float).view(b, 1, 1, 1).expand(b, 3, 32, 32).contiguous()
    y = torch.arange(b)
    rng = random.Random(3)
    for lam_drawn in (0.2, 0.5, 0.9):
        box = cutmix_box(32, 32, lam_drawn, rng)
        out, t, lam = cutmix(x, y, box)
        kept = (out == x).float().mean((1, 2, 3))  # pixels still showing the sample's own image
        torch.testing.assert_close(kept, torch.full((b,), lam))
        torch.testing.assert_close(t[:, :b], lam * torch.eye(b) + (1 - lam) * torch.eye(b).flip(0))
        assert abs(lam - lam_drawn) < 0.25  # clipping at a border only shrinks the box
    # clipped box: a centre in the corner
    out, _, lam = cutmix(x, y, (0, 5, 0, 7))
    assert lam == pytest.approx(1 - 35 / 1024)
    assert float((out != x).float().mean()) == pytest.approx(35 / 1024 * 1.0)  # pasted from a different image


# ----------------------------------------------------------------------------------------------------------------
# Test-time augmentation


def test_tta_views_and_average_against_manual_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    xf = x.float()
    padded = F.pad(xf, (2, 2, 2, 2), mode="reflect")
    manual = [xf, xf.flip(-1), padded[..., 0:32, 0:32], padded[..., 0:32, 0:32].flip(-1),
              padded[..., 4:36, 4:36], padded[..., 4:36, 4:36].flip(-1)]
    views = tta_views(x, "flip_shift", shift=2, pad_mode="reflect")
    assert len(views) == 6
    for v, m in zip(views, manual):
        assert torch.equal(v.float(), m)
    assert len(tta_views(x, "flip")) == 2 and len(tta_views(x, "none")) == 1
    # the (+2, +2) view shows at (i, j) the source pixel (i - 2, j - 2)
    assert torch.equal(views[2][..., 5:, 5:], x[..., 3:-2, 3:-2])

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K)).eval()
    aug = BatchAugment(crop_padding=2, channels_last=False)
    y = torch.arange(5)
    for mode, n_views in (("flip", 2), ("flip_shift", 6)):
        probs = tta_probs(net, x, aug, mode, shift=2)
        with torch.no_grad():
            expected = sum(net(aug.eval(m.to(torch.uint8))).softmax(1) for m in manual[:n_views]) / n_views
        torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
        # evaluate(): accuracy of the averaged prediction, loss = NLL of the averaged probabilities
        result = evaluate(net, x, y, aug, nn.CrossEntropyLoss(), 2, tta=mode, tta_shift=2)
        assert result.loss == pytest.approx(float(-expected[torch.arange(5), y].log().mean()), rel=1e-5)
        assert result.acc == pytest.approx(float((expected.argmax(1) == y).float().mean()))
    plain = evaluate(net, x, y, aug, nn.CrossEntropyLoss(), 2)
    assert plain.loss == pytest.approx(float(F.cross_entropy(net(aug.eval(x)), y).detach()), rel=1e-5)


def test_selective_tta_averages_only_the_unconfident_images():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K)).eval()
    with torch.no_grad():
        net[-1].weight.mul_(30)  # spread the confidences over (0.1, 1)
    aug = BatchAugment(crop_padding=1, channels_last=False)
    plain, full = tta_probs(net, x, aug, "none"), tta_probs(net, x, aug, "flip_shift")
    threshold = float(plain.max(1).values.median())
    unsure = plain.max(1).values < threshold
    assert 0 < int(unsure.sum()) < len(x)
    selective = tta_probs(net, x, aug, "flip_shift", confidence=threshold)
    torch.testing.assert_close(selective[unsure], full[unsure], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(selective[~unsure], plain[~unsure], rtol=0, atol=0)
    assert torch.equal(tta_probs(net, x, aug, "flip_shift", confidence=1e-3), plain)  # nobody is below it
    y = torch.arange(16) % K
    result = evaluate(net, x, y, aug, nn.CrossEntropyLoss(), 5, tta="flip_shift", tta_confidence=threshold)
    assert result.acc == pytest.approx(float((selective.argmax(1) == y).float().mean()))


def test_selective_tta_config_is_checked():
    assert load_config("quick", overrides=["train.tta_confidence=0.9"]).train.tta_confidence == 0.9
    for bad, fragment in (("train.tta_confidence=1.5", "(0, 1]"), ("train.tta_confidence=0", "(0, 1]")):
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            load_config("quick", overrides=[bad])
    with pytest.raises(ConfigError, match=re.escape("train.tta is 'none'")):
        load_config("quick_cnn", overrides=["train.tta_confidence=0.9"])


# ----------------------------------------------------------------------------------------------------------------
# Config: every new key is reachable as a dotted override; bad values give one clear ConfigError


@pytest.mark.parametrize(
    ("override", "path", "value"),
    [
        ("loss.name=focal", "loss.name", "focal"),
        ("loss.label_smoothing=0.1", "loss.label_smoothing", 0.1),
        ("loss.focal_gamma=1.5", "loss.focal_gamma", 1.5),
        ("loss.focal_alpha=0.25", "loss.focal_alpha", 0.25),
        ("loss.mse_on=logits", "loss.mse_on", "logits"),
        ("optim.name=signum", "optim.name", "signum"),
        ("optim.name=rmsprop", "optim.name", "rmsprop"),
        ("optim.alpha=0.9", "optim.alpha", 0.9),
        ("optim.rho=0.95", "optim.rho", 0.95),
        ("optim.l1=1e-5", "optim.l1", 1e-5),
        ("optim.l2=5e-4", "optim.l2", 5e-4),
        ("optim.no_decay_bn_bias=true", "optim.no_decay_bn_bias", True),
        ("optim.bn_bias_lr_mult=64", "optim.bn_bias_lr_mult", 64.0),
        ("optim.lookahead_k=5", "optim.lookahead_k", 5),
        ("optim.lookahead_alpha=0.8", "optim.lookahead_alpha", 0.8),
        ("sched.name=multistep", "sched.milestones", [3, 6]),
        ("sched.t_0=5", "sched.t_0", 5),
        ("sched.t_mult=2", "sched.t_mult", 2),
        ("sched.plateau_factor=0.5", "sched.plateau_factor", 0.5),
        ("sched.plateau_patience=3", "sched.plateau_patience", 3),
        ("sched.plateau_threshold=0.01", "sched.plateau_threshold", 0.01),
        ("augment.mixup_alpha=0.2", "augment.mixup_alpha", 0.2),
        ("augment.cutmix_alpha=1", "augment.cutmix_alpha", 1.0),
        ("augment.mix_prob=0.5", "augment.mix_prob", 0.5),
        ("train.grad_accum_steps=4", "train.grad_accum_steps", 4),
        ("train.ema_decay=0.999", "train.ema_decay", 0.999),
        ("train.swa_start_epoch=8", "train.swa_start_epoch", 8),
        ("train.swa_lr=0.01", "train.swa_lr", 0.01),
        ("train.tta=flip_shift", "train.tta", "flip_shift"),
        ("train.tta_shift=2", "train.tta_shift", 2),
    ],
)
def test_new_keys_are_reachable_from_overrides(override, path, value):
    extra = {"sched.name=multistep": ["sched.milestones=[3, 6]"], "train.swa_lr=0.01": ["train.swa_start_epoch=5"],
             "loss.label_smoothing=0.1": ["loss.name=label_smoothing"],
             "optim.alpha=0.9": ["optim.name=rmsprop"], "optim.rho=0.95": ["optim.name=adadelta"]}.get(override, [])
    cfg = load_config(overrides=["train.epochs=10", *extra, override])
    section, key = path.split(".")
    assert getattr(getattr(cfg, section), key) == value


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.name=huber"], r"'loss.name': got 'huber' .* expected one of 'cross_entropy'"),
        (["loss.name=label_smoothing"], r"'loss.label_smoothing': got 0.0, expected > 0 when loss.name is label_"),
        (["loss.focal_gamma=-1"], r"'loss.focal_gamma': got -1.0, expected >= 0"),
        (["loss.focal_alpha=[1, 2]"], r"'loss.focal_alpha': got \[1.0, 2.0\], expected null, a number > 0, or a list"),
        (["loss.mse_on=probs"], r"'loss.mse_on': got 'probs'"),
        (["optim.name=lion"], r"'optim.name': got 'lion' .* 'scratch_sgd', 'signum'"),
        (["optim.l1=-0.1"], r"'optim.l1': got -0.1, expected >= 0"),
        (["optim.l2=-1"], r"'optim.l2': got -1.0, expected >= 0"),
        (["optim.bn_bias_lr_mult=0"], r"'optim.bn_bias_lr_mult': got 0.0, expected > 0"),
        (["optim.lookahead_k=-1"], r"'optim.lookahead_k': got -1, expected >= 0"),
        (["optim.lookahead_alpha=1.5"], r"'optim.lookahead_alpha': got 1.5, expected 0 < alpha <= 1"),
        (["optim.name=signum", "optim.nesterov=true"], r"'optim.nesterov'.* sgd, scratch_sgd or muon"),
        (["optim.alpha=1"], r"'optim.alpha'"),
        (["optim.no_decay_bn_bias=maybe"], r"'optim.no_decay_bn_bias': got 'maybe' \(str\), expected bool"),
        (["sched.name=triangle"], r"'sched.name': got 'triangle'"),
        (["sched.name=multistep"], r"'sched.milestones': got \[\], expected at least one epoch"),
        (["sched.milestones=[5, 3]"], r"'sched.milestones': got \[5, 3\], expected increasing epochs"),
        (["sched.name=warmup_cosine"], r"'sched.warmup_epochs': got 0.0, expected > 0 when sched.name is warmup_"),
        (["sched.t_0=0"], r"'sched.t_0': got 0, expected an integer >= 1"),
        (["sched.t_mult=0"], r"'sched.t_mult'"),
        (["sched.plateau_factor=1"], r"'sched.plateau_factor': got 1.0, expected 0 < factor < 1"),
        (["sched.plateau_patience=-1"], r"'sched.plateau_patience'"),
        (["sched.name=plateau", "data.val_size=0"], r"'sched.name': got 'plateau', expected not plateau when"),
        (["augment.mixup_alpha=-1"], r"'augment.mixup_alpha': got -1.0, expected >= 0"),
        (["augment.cutmix_alpha=x"], r"'augment.cutmix_alpha': got 'x' \(str\), expected float"),
        (["augment.mix_prob=2"], r"'augment.mix_prob': got 2.0, expected 0 <= mix_prob <= 1"),
        (["train.grad_accum_steps=0"], r"'train.grad_accum_steps': got 0, expected an integer >= 1"),
        (["train.ema_decay=1"], r"'train.ema_decay': got 1.0, expected 0 <= decay < 1"),
        (["train.swa_start_epoch=11"], r"'train.swa_start_epoch': got 11, expected null or 1..train.epochs \(10\)"),
        (["train.swa_lr=0.1"], r"'train.swa_lr': got 0.1, expected null unless train.swa_start_epoch"),
        (["train.swa_start_epoch=5", "train.ema_decay=0.9"], r"'train.ema_decay': got 0.9, expected 0 when"),
        (["train.swa_start_epoch=5", "train.test_weights=best"], r"'train.test_weights': got 'best'"),
        (["train.tta=hflip"], r"'train.tta': got 'hflip' .* expected one of 'none', 'flip', 'flip_shift'"),
        (["train.tta_shift=5"], r"'train.tta_shift': got 5, expected 1..4"),
    ],
)
def test_bad_strategy_values_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=["train.epochs=10", *overrides])
