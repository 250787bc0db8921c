"""Learning-rate schedules as pure functions of training progress.

The LR at global step ``s`` is ``base_lr * factor(t)`` with ``t`` the progress in epochs: ``s / steps_per_epoch``
for schedules stepped per batch, ``floor`` of that for schedules stepped per epoch. Because the LR depends only
on the step counter, a resumed run gets exactly the LRs of an uninterrupted one, and the warm-up/decay shape
does not depend on when ``scheduler.step()`` happens to be called.
"""

from __future__ import annotations

import math

import torch

from cifarlab.config import SchedulerConfig


class LRSchedule:
    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, steps_per_epoch: int):
        self.optimizer = optimizer
        self.cfg = cfg
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        # Step-wise decays change at epoch boundaries by definition; smooth curves are updated every batch.
        self.interval = cfg.interval if cfg.interval != "auto" else ("epoch" if cfg.name == "step" else "step")

    def factor(self, t: float) -> float:
        """LR multiplier at progress ``t`` epochs (0 <= t <= epochs)."""
        c, total = self.cfg, float(self.epochs)
        if c.name == "onecycle":
            # Exactly torch's OneCycleLR (cosine, div_factor 25, final_div_factor 1e4), counted in steps.
            steps, s = total * self.steps_per_epoch, t * self.steps_per_epoch
            up_end = max(c.pct_start * steps - 1, 1e-12)
            start, end = 1 / 25, 1 / 25 / 1e4
            if s <= up_end:
                return start + (1 - start) * (1 - math.cos(math.pi * s / up_end)) / 2
            frac = min(1.0, (s - up_end) / max(steps - 1 - up_end, 1e-12))
            return end + (1 - end) * (1 + math.cos(math.pi * frac)) / 2
        w = c.warmup_epochs
        if w > 0 and t < w:
            # Linear warm-up; the first update already gets one unit of it (never an LR of exactly 0).
            unit = 1 / self.steps_per_epoch if self.interval == "step" else 1.0
            return min(1.0, (t + unit) / w)
        if c.name == "constant":
            return 1.0
        if c.name == "step":
            return c.gamma ** math.floor(t / c.step_size)
        if c.name == "cosine":
            frac = min(1.0, (t - w) / max(total - w, 1e-12))
            floor = c.min_lr / self.base_lrs[0]
            return floor + (1 - floor) * (1 + math.cos(math.pi * frac)) / 2
        raise AssertionError(f"unhandled schedule {c.name}")

    def progress(self, step: int) -> float:
        t = step / self.steps_per_epoch
        return float(math.floor(t)) if self.interval == "epoch" else t

    def apply(self, step: int) -> float:
        """Set the LR for global step ``step`` (0-based, called before that step's update); return the first."""
        f = self.factor(self.progress(step))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f
        return self.optimizer.param_groups[0]["lr"]
