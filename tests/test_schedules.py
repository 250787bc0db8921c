"""LR schedules: exact values at given steps, against independent formulas and torch's own schedulers."""

from __future__ import annotations

import math

import pytest
import torch

from cifarlab.config import load_config
from cifarlab.engine.schedules import LRSchedule


def make(overrides, epochs=10, steps=5, lr=0.1):
    cfg = load_config(overrides=[f"optim.lr={lr}", f"train.epochs={epochs}", *overrides])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    return LRSchedule(opt, cfg.sched, cfg.train.epochs, steps), opt


def test_constant():
    sched, _ = make(["sched.name=constant"])
    assert [sched.apply(s) for s in (0, 17, 49)] == [0.1, 0.1, 0.1]


def test_step_is_per_epoch():
    sched, _ = make(["sched.name=step", "sched.step_size=3", "sched.gamma=0.5"])
    assert sched.interval == "epoch"
    # steps 0..14 are epochs 0..2 (lr), 15..29 epochs 3..5 (lr/2), ...
    assert sched.apply(14) == pytest.approx(0.1)
    assert sched.apply(15) == pytest.approx(0.05)
    assert sched.apply(30) == pytest.approx(0.025)


def test_cosine_per_step_with_warmup_matches_formula():
    sched, _ = make(["sched.name=cosine", "sched.warmup_epochs=2", "sched.min_lr=0.001"], epochs=10, steps=5)
    # warm-up: step s gets lr * (s+1)/10
    assert [round(sched.apply(s), 10) for s in range(3)] == [0.01, 0.02, 0.03]
    assert sched.apply(9) == pytest.approx(0.1)
    for s in (10, 23, 49):
        t = (s / 5 - 2) / 8
        assert sched.apply(s) == pytest.approx(0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * t)) / 2)


def test_cosine_per_epoch_interval_holds_lr_within_epoch():
    sched, _ = make(["sched.name=cosine", "sched.interval=epoch"], epochs=4, steps=5)
    lrs = [sched.apply(s) for s in range(20)]
    assert lrs[0:5] == [0.1] * 5
    assert lrs[5] == pytest.approx(0.05 + 0.05 * math.cos(math.pi / 4))
    assert len(set(lrs[5:10])) == 1


def test_onecycle_matches_torch():
    epochs, steps = 4, 25
    sched, _ = make(["sched.name=onecycle", "sched.pct_start=0.25"], epochs=epochs, steps=steps)
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=0.1, total_steps=epochs * steps, pct_start=0.25, anneal_strategy="cos",
        cycle_momentum=False,
    )
    for s in range(epochs * steps):
        ours = sched.apply(s)
        theirs = ref_opt.param_groups[0]["lr"]
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12), s
        ref_opt.step()
        ref.step()


def test_schedule_is_a_function_of_step_only():
    a, _ = make(["sched.name=cosine", "sched.warmup_epochs=1"])
    b, _ = make(["sched.name=cosine", "sched.warmup_epochs=1"])
    seq = [a.apply(s) for s in range(50)]
    assert [b.apply(s) for s in range(30, 50)] == seq[30:50]  # a "resumed" schedule continues exactly
