"""Learning-rate schedules as pure functions of training progress (plateau: plus a small checkpointed state).

The LR at global step ``s`` is ``base_lr * factor(t)`` with ``t`` the progress in epochs: ``s / steps_per_epoch``
for schedules stepped per batch, ``floor`` of that for schedules stepped per epoch. Because the LR depends only
on the step counter, a resumed run gets exactly the LRs of an uninterrupted one, and the warm-up/decay shape
does not depend on when ``scheduler.step()`` happens to be called. Each parameter group keeps its own base LR
(``optim.bn_bias_lr_mult``); the factor is shared.

The one exception is ``plateau`` (reduce-on-plateau on the validation loss), which cannot be a function of the
step: it also depends on the validation losses seen so far. Its state (current scale, best loss, bad epochs) is
updated once per epoch by ``plateau_step(val_loss)`` and saved with ``state_dict()`` in the checkpoint.

Closed forms (t in epochs, E = train.epochs, w = warmup_epochs, f = min_lr / lr):

* constant: 1;  step: gamma^floor(t/step_size);  multistep: gamma^#{milestones <= t};  exponential: gamma^t
* cosine / warmup_cosine: f + (1-f) (1 + cos(pi (t-w)/(E-w))) / 2
* warmup_linear: f + (1-f) (1 - (t-w)/(E-w))
* cosine_restarts (SGDR): f + (1-f) (1 + cos(pi T_cur/T_i)) / 2, cycles of t_0, t_0*t_mult, t_0*t_mult^2, ...
* onecycle: torch's OneCycleLR (cosine, div_factor 25, final_div_factor 1e4)
* warm-up (all but onecycle): s + (1-s) (t + unit)/w during t < w, unit = one step (or one epoch) of progress,
  s = warmup_start
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cifarlab.config import SchedulerConfig

EPOCH_WISE = ("step", "multistep", "exponential", "plateau")


class LRSchedule:
    def __init__(
        self,
        optimizer: Any,
        cfg: SchedulerConfig,
        epochs: int,
        steps_per_epoch: int,
        swa_start_epoch: int | None = None,
        swa_lr: float | None = None,
    ):
        self.optimizer = optimizer  # a torch optimizer or anything with .param_groups (Lookahead)
        self.cfg = cfg
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        # Step-wise decays change at epoch boundaries by definition; smooth curves are updated every batch.
        self.interval = cfg.interval if cfg.interval != "auto" else ("epoch" if cfg.name in EPOCH_WISE else "step")
        # SWA: from epoch swa_start_epoch (1-based) on, a constant LR (group 0 at swa_lr, others in proportion).
        self.swa_start_epoch, self.swa_lr = swa_start_epoch, swa_lr
        # plateau state: multiplier on the LR, best validation loss so far, epochs since it improved.
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad_epochs = 0

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
            rise = c.warmup_start + (1 - c.warmup_start) * min(1.0, (t + unit) / w)
            return rise * (self.plateau_scale if c.name == "plateau" else 1.0)
        floor = c.min_lr / self.base_lrs[0]
        if c.name == "constant":
            return 1.0
        if c.name == "step":
            return c.gamma ** math.floor(t / c.step_size)
        if c.name == "multistep":
            return c.gamma ** sum(1 for m in c.milestones if m <= t)
        if c.name == "exponential":
            return c.gamma**t
        if c.name == "plateau":
            return self.plateau_scale
        if c.name in ("cosine", "warmup_cosine"):
            frac = min(1.0, (t - w) / max(total - w, 1e-12))
            return floor + (1 - floor) * (1 + math.cos(math.pi * frac)) / 2
        if c.name == "warmup_linear":
            frac = min(1.0, (t - w) / max(total - w, 1e-12))
            return floor + (1 - floor) * (1 - frac)
        if c.name == "cosine_restarts":
            t_cur, t_i = _sgdr_position(t, float(c.t_0), c.t_mult)
            return floor + (1 - floor) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
        raise AssertionError(f"unhandled schedule {c.name}")

    def progress(self, step: int) -> float:
        t = step / self.steps_per_epoch
        return float(math.floor(t)) if self.interval == "epoch" else t

    def apply(self, step: int) -> float:
        """Set the LR for global step ``step`` (0-based, called before that step's update); return the first."""
        if self.swa_lr is not None and self.swa_start_epoch is not None \
                and step // self.steps_per_epoch >= self.swa_start_epoch - 1:
            f = self.swa_lr / self.base_lrs[0]
        else:
            f = self.factor(self.progress(step))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f
        return self.optimizer.param_groups[0]["lr"]

    # -- reduce-on-plateau -------------------------------------------------------------------------------------

    def plateau_step(self, val_loss: float) -> bool:
        """End-of-epoch update of ``plateau`` from the validation loss; True if the LR was reduced.

        The semantics of torch's ReduceLROnPlateau (mode min, relative threshold, cooldown 0): an epoch improves
        if ``val_loss < best * (1 - threshold)``; after more than ``plateau_patience`` epochs in a row without
        improvement the LR is multiplied by ``plateau_factor`` (not below ``min_lr``) and the count restarts.
        A NaN loss counts as no improvement.
        """
        c = self.cfg
        if val_loss < self.plateau_best * (1 - c.plateau_threshold):
            self.plateau_best, self.plateau_bad_epochs = val_loss, 0
        else:
            self.plateau_bad_epochs += 1
        if self.plateau_bad_epochs > c.plateau_patience:
            self.plateau_bad_epochs = 0
            base = self.base_lrs[0]
            new = max(self.plateau_scale * c.plateau_factor, c.min_lr / base)
            if (self.plateau_scale - new) * base > 1e-8:  # torch's eps: ignore changes smaller than 1e-8
                self.plateau_scale = new
                return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_bad_epochs": self.plateau_bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])


def _sgdr_position(t: float, t_0: float, t_mult: int) -> tuple[float, float]:
    """(T_cur, T_i): epochs into the current cycle and its length, as torch's CosineAnnealingWarmRestarts."""
    if t_mult == 1:
        return t % t_0, t_0
    n = int(math.log(t / t_0 * (t_mult - 1) + 1, t_mult))
    return t - t_0 * (t_mult**n - 1) / (t_mult - 1), t_0 * t_mult**n


def plot_lr(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/lr.png``: the LR of every optimizer step (from steps.csv) against the step.

    Headless (cifarlab.plotting: matplotlib's Agg canvas, no pyplot); imported lazily, as training needs no plots.
    """
    from cifarlab.engine.checkpoint import atomic_write_bytes
    from cifarlab.engine.metrics import read_csv
    from cifarlab.plotting import new_figure, png_bytes

    run_dir = Path(run_dir)
    rows = read_csv(run_dir / "steps.csv")
    fig = new_figure(6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([r["step"] for r in rows], [r["lr"] for r in rows], lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"LR schedule ({run_dir.name})")
    ax.grid(alpha=0.3)
    path = run_dir / "lr.png"
    atomic_write_bytes(path, png_bytes(fig))  # like every run file: the old one or the new one, never half
    return path
