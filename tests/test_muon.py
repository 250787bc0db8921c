"""Muon (engine/muon.py) against torch's own Muon and SGD, its groups, and a training run with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifarlab.config import load_config
from cifarlab.engine.muon import MuonSGD, muon_groups, orthogonalise
from cifarlab.engine.optim import build_optimizer
from cifarlab.engine.trainer import train
from cifarlab.models import create
from synthetic import cfg_with, synthetic_cifar


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(64, 216), (216, 64)])
def test_orthogonalise_pushes_singular_values_towards_one(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=gen))
    g = u @ torch.diag(torch.logspace(-1, 1, k)) @ v.T  # singular values 0.1 .. 10, directions U V^T known
    out = orthogonalise(g, steps=5, dtype=dtype).float()
    s_out = torch.linalg.svdvals(out)
    assert s_out.min() > 0.5 and s_out.max() < 1.4  # Muon's quintic: ~U(0.5, 1.5), not exactly 1
    cosine = (out * (u @ v.T)).sum() / (out.norm() * (u @ v.T).norm())
    assert cosine > 0.95


def test_newton_schulz_runs_in_bf16_only_where_the_hardware_has_it(monkeypatch):
    from cifarlab.engine import muon

    net = nn.Linear(4, 4)
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(muon, "cpu_has_native_bf16", lambda native=native: native)
        opt = MuonSGD([{"params": list(net.parameters()), "muon": True}], lr=0.1, momentum=0.85, nesterov=True,
                      muon_momentum=0.6, ns_steps=3)
        assert opt.ns_dtype == expected and muon.ns_dtype(torch.device("cuda")) == torch.bfloat16


def test_muon_step_matches_torch_muon_on_a_matrix():
    torch.manual_seed(0)
    w0 = torch.randn(32, 64)
    ours, ref = nn.Parameter(w0.clone()), nn.Parameter(w0.clone())
    opt = MuonSGD([{"params": [ours], "muon": True}], lr=0.05, momentum=0.85, nesterov=True, muon_momentum=0.6,
                  ns_steps=3, renormalise=False)
    # torch's Muon: EMA momentum (a rescaled sum: the same direction), no decay, LR unadjusted for a wide matrix
    torch_opt = torch.optim.Muon([ref], lr=0.05, weight_decay=0.0, momentum=0.6, nesterov=True, ns_steps=3)
    for _ in range(4):
        g = torch.randn(32, 64)
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        torch_opt.step()
    moved = (ref - w0).norm()
    assert moved > 0.1
    assert (ours - ref).norm() < 0.03 * moved  # equal up to bf16 rounding of differently scaled inputs


def test_sgd_groups_match_torch_sgd_exactly():
    torch.manual_seed(0)
    params = [torch.randn(10), torch.randn(4, 5)]
    ours = [nn.Parameter(p.clone()) for p in params]
    ref = [nn.Parameter(p.clone()) for p in params]
    opt = MuonSGD([{"params": ours, "weight_decay": 0.01}], lr=0.3, momentum=0.85, nesterov=True,
                  muon_momentum=0.6, ns_steps=3)
    torch_opt = torch.optim.SGD(ref, lr=0.3, momentum=0.85, nesterov=True, weight_decay=0.01)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        torch_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_filters_are_renormalised_to_sqrt_out():
    conv = nn.Conv2d(8, 16, 3, bias=False)
    with torch.no_grad():
        conv.weight.mul_(7.0)
    opt = MuonSGD([{"params": [conv.weight], "muon": True}], lr=1e-12, momentum=0.85, nesterov=True,
                  muon_momentum=0.6, ns_steps=3)
    conv.weight.grad = torch.randn_like(conv.weight)
    opt.step()
    assert conv.weight.norm().item() == pytest.approx(16**0.5, rel=1e-5)


def test_muon_groups_of_fast_net_and_their_decay():
    cfg = load_config("fast", overrides=["optim.name=muon", "optim.lr=0.24", "optim.bn_bias_lr_mult=400",
                                          "optim.head_lr_mult=7", "optim.weight_decay=0.004",
                                          "optim.lookahead_k=0"]).optim
    model = create("fast_net", whiten_bias_epochs=3)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, MuonSGD)
    groups = {g["name"]: g for g in opt.param_groups}
    assert [g["name"] for g in opt.param_groups] == ["filters", "head", "bias"]
    n_convs = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad)
    assert len(groups["filters"]["params"]) == n_convs == 6 and groups["filters"]["weight_decay"] == 0.0
    assert groups["head"]["params"] == [model.head.weight]
    n_bias = sum(1 for p in model.parameters() if p.ndim <= 1 and p.requires_grad)
    assert len(groups["bias"]["params"]) == n_bias  # BN shifts and the whitening bias
    assert groups["head"]["lr"] == pytest.approx(0.24 * 7) and groups["bias"]["lr"] == pytest.approx(0.24 * 400)
    for name in ("head", "bias"):  # the same decay per step at the base LR, whatever the group's LR
        assert groups[name]["lr"] * groups[name]["weight_decay"] == pytest.approx(0.004)
    assert groups["filters"]["momentum"] == 0.85 and groups["filters"]["muon_momentum"] == 0.6


def test_muon_groups_leave_nothing_out():
    params = [torch.zeros(3, 3, 2, 2), torch.zeros(10, 4), torch.zeros(5), torch.zeros(())]
    groups = muon_groups(params, lr=1.0, bias_lr_mult=2.0, head_lr_mult=3.0, decay_per_step=0.0)
    assert sum(len(g["params"]) for g in groups) == len(params)


def test_a_run_with_muon_learns(tmp_path):
    summary = train(cfg_with("train.epochs=3", "optim.name=muon", "optim.lr=0.05", "optim.momentum=0.85",
                             "optim.nesterov=true", "optim.weight_decay=0", "optim.bn_bias_lr_mult=1"),
                    tmp_path / "muon", data=synthetic_cifar(600, 200), progress=False)
    assert summary["status"] == "completed" and summary["test_acc"] > 0.5  # chance 0.1
