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
* warmup_linear, linear: f + (1-f) (1 - (t-w)/(E-w)) (linear: w may be 0)
* cosine_restarts (SGDR): f + (1-f) (1 + cos(pi T_cur/T_i)) / 2, cycles of t_0, t_0*t_mult, t_0*t_mult^2, ...
* onecycle: torch's OneCycleLR (cosine, div_factor 25, final_div_factor 1e4)
* warm-up (all but onecycle): s + (1-s) (t + unit)/w during t < w, unit = one step (or one epoch) of progress,
  s = warmup_start
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cifarlab.config import SCHEDULE_KEYS, SchedulerConfig
from cifarlab.registry import Registry

# One entry per schedule: ``factor(schedule, t)``, the LR multiplier after the warm-up, and the ``sched.*`` keys
# it reads. Tags: "epoch" (sched.interval auto steps it per epoch), "own_warmup" (no generic linear warm-up).
SCHEDULES: Registry[Callable[[LRSchedule, float], float]] = Registry(
    "schedule", config_key="sched.name", declared=SCHEDULE_KEYS)


def list_schedules() -> list[str]:
    return SCHEDULES.names()


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
        self.entry = SCHEDULES.entry(cfg.name)
        self.interval = cfg.interval if cfg.interval != "auto" else ("epoch" if "epoch" in self.entry.tags else "step")
        # SWA: from epoch swa_start_epoch (1-based) on, a constant LR (group 0 at swa_lr, others in proportion).
        self.swa_start_epoch, self.swa_lr = swa_start_epoch, swa_lr
        # plateau state: multiplier on the LR, best validation loss so far, epochs since it improved.
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad_epochs = 0
        self.plateau_cooldown_left = 0

    def factor(self, t: float) -> float:
        """LR multiplier at progress ``t`` epochs (0 <= t <= epochs)."""
        c = self.cfg
        w = c.warmup_epochs
        if w > 0 and t < w and "own_warmup" not in self.entry.tags:
            # Linear warm-up; the first update already gets one unit of it (never an LR of exactly 0).
            unit = 1 / self.steps_per_epoch if self.interval == "step" else 1.0
            rise = c.warmup_start + (1 - c.warmup_start) * min(1.0, (t + unit) / w)
            return rise * (self.plateau_scale if c.name == "plateau" else 1.0)
        return self.entry.obj(self, t)

    def floor(self) -> float:
        """min_lr as a fraction of the base LR of group 0."""
        return self.cfg.min_lr / self.base_lrs[0]

    def decay_fraction(self, t: float) -> float:
        """Progress through the decay after the warm-up, 0..1."""
        w = self.cfg.warmup_epochs
        return min(1.0, (t - w) / max(float(self.epochs) - w, 1e-12))

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

        The semantics of torch's ReduceLROnPlateau (mode min): an epoch improves if ``val_loss < best * (1 -
        threshold)`` (threshold_mode rel) or ``val_loss < best - threshold`` (abs); during ``plateau_cooldown``
        epochs after a reduction bad epochs are not counted; after more than ``plateau_patience`` bad epochs in a
        row the LR is multiplied by ``plateau_factor`` (not below ``min_lr``) and the count restarts.
        A NaN loss counts as no improvement.
        """
        c = self.cfg
        best = self.plateau_best
        bar = best * (1 - c.plateau_threshold) if c.plateau_threshold_mode == "rel" else best - c.plateau_threshold
        if val_loss < bar:
            self.plateau_best, self.plateau_bad_epochs = val_loss, 0
        else:
            self.plateau_bad_epochs += 1
        if self.plateau_cooldown_left > 0:
            self.plateau_cooldown_left -= 1
            self.plateau_bad_epochs = 0
        if self.plateau_bad_epochs > c.plateau_patience:
            self.plateau_bad_epochs = 0
            self.plateau_cooldown_left = c.plateau_cooldown
            base = self.base_lrs[0]
            new = max(self.plateau_scale * c.plateau_factor, c.min_lr / base)
            if (self.plateau_scale - new) * base > 1e-8:  # torch's eps: ignore changes smaller than 1e-8
                self.plateau_scale = new
                return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_bad_epochs": self.plateau_bad_epochs, "plateau_cooldown_left": self.plateau_cooldown_left}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])
        self.plateau_cooldown_left = int(state.get("plateau_cooldown_left", 0))  # absent in older checkpoints


@SCHEDULES.register("constant", "1", keys=())
def _constant(s: LRSchedule, t: float) -> float:
    return 1.0


@SCHEDULES.register("step", "gamma^floor(t / step_size)", keys=("step_size", "gamma"), tags=("epoch",))
def _step(s: LRSchedule, t: float) -> float:
    return s.cfg.gamma ** math.floor(t / s.cfg.step_size)


@SCHEDULES.register("multistep", "gamma^#{milestones <= t}", keys=("milestones", "gamma"), tags=("epoch",))
def _multistep(s: LRSchedule, t: float) -> float:
    return s.cfg.gamma ** sum(1 for m in s.cfg.milestones if m <= t)


@SCHEDULES.register("exponential", "gamma^t, gamma per epoch", keys=("gamma",), tags=("epoch",))
def _exponential(s: LRSchedule, t: float) -> float:
    return s.cfg.gamma**t


@SCHEDULES.register("plateau", "reduce on a validation-loss plateau (torch ReduceLROnPlateau)", tags=("epoch",),
                    keys=("plateau_factor", "plateau_patience", "plateau_threshold", "plateau_threshold_mode",
                          "plateau_cooldown", "min_lr"))
def _plateau(s: LRSchedule, t: float) -> float:
    return s.plateau_scale


def _cosine(s: LRSchedule, t: float) -> float:
    floor = s.floor()
    return floor + (1 - floor) * (1 + math.cos(math.pi * s.decay_fraction(t))) / 2


SCHEDULES.register("cosine", "cosine from optim.lr to min_lr (after the warm-up, if any)", keys=("min_lr",))(_cosine)
SCHEDULES.register("warmup_cosine", "cosine, requires warmup_epochs > 0", keys=("min_lr", "warmup_epochs"))(_cosine)


@SCHEDULES.register("warmup_linear", "linear decay to min_lr, requires warmup_epochs > 0",
                    keys=("min_lr", "warmup_epochs"))
def _warmup_linear(s: LRSchedule, t: float) -> float:
    floor = s.floor()
    return floor + (1 - floor) * (1 - s.decay_fraction(t))


# The same line without a required warm-up (airbench94_muon: from the full LR straight down to 0).
SCHEDULES.register("linear", "linear decay to min_lr over the run (warm-up optional)",
                   keys=("min_lr", "warmup_epochs"))(_warmup_linear)


@SCHEDULES.register("cosine_restarts", "SGDR: cosine cycles of t_0, t_0*t_mult, ... epochs",
                    keys=("t_0", "t_mult", "min_lr"))
def _cosine_restarts(s: LRSchedule, t: float) -> float:
    floor = s.floor()
    t_cur, t_i = _sgdr_position(t, float(s.cfg.t_0), s.cfg.t_mult)
    return floor + (1 - floor) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


@SCHEDULES.register("onecycle", "torch's OneCycleLR (cosine, div 25, final div 1e4)", keys=("pct_start",),
                    tags=("own_warmup",))
def _onecycle(s: LRSchedule, t: float) -> float:
    # Exactly torch's OneCycleLR (cosine, div_factor 25, final_div_factor 1e4), counted in steps.
    steps, step = float(s.epochs) * s.steps_per_epoch, t * s.steps_per_epoch
    up_end = max(s.cfg.pct_start * steps - 1, 1e-12)
    start, end = 1 / 25, 1 / 25 / 1e4
    if step <= up_end:
        return start + (1 - start) * (1 - math.cos(math.pi * step / up_end)) / 2
    frac = min(1.0, (step - up_end) / max(steps - 1 - up_end, 1e-12))
    return end + (1 - end) * (1 + math.cos(math.pi * frac)) / 2


def _sgdr_position(t: float, t_0: float, t_mult: int) -> tuple[float, float]:
    """(T_cur, T_i): epochs into the current cycle and its length, as torch's CosineAnnealingWarmRestarts."""
    if t_mult == 1:
        return t % t_0, t_0
    n = int(math.log(t / t_0 * (t_mult - 1) + 1, t_mult))
    return t - t_0 * (t_mult**n - 1) / (t_mult - 1), t_0 * t_mult**n


def plot_lr(run_dir: str | Path, warn: Callable[[str], Any] | None = None) -> Path | None:
    """Write ``<run_dir>/lr.png``: the LR of every optimizer step (from steps.csv) against the step.

    Headless (cifarlab.plotting: matplotlib's Agg canvas, no pyplot); imported lazily, as training needs no plots.
    With ``warn``, a failure is reported through it and None returned: a figure is a convenience, and a finished
    run is never lost over it.
    """
    try:
        return _plot_lr(Path(run_dir))
    except Exception as exc:
        if warn is None:
            raise
        warn(f"cifarlab: warning: could not write lr.png ({type(exc).__name__}: {exc})")
        return None


def _plot_lr(run_dir: Path) -> Path:
    from cifarlab.engine.metrics import read_csv
    from cifarlab.plotting import save

    path = run_dir / "lr.png"
    return save(lr_plot(read_csv(run_dir / "steps.csv"), run_dir.name), path)  # atomic, like every run file


def _epoch_progress(rows: list[dict[str, Any]]) -> list[float]:
    """Each step's place in epochs (epoch e's steps spread over (e-1, e]); the step number without epochs."""
    if not rows or "epoch" not in rows[0]:
        return [r["step"] for r in rows]
    per_epoch: dict[int, int] = {}
    for r in rows:
        per_epoch[int(r["epoch"])] = per_epoch.get(int(r["epoch"]), 0) + 1
    seen: dict[int, int] = {}
    out = []
    for r in rows:
        e = int(r["epoch"])
        seen[e] = seen.get(e, 0) + 1
        out.append(e - 1 + seen[e] / per_epoch[e])
    return out


def lr_plot(rows: list[dict[str, Any]], name: str) -> Any:
    """The LR of every optimizer step (steps.csv rows) against training progress in epochs (whole-epoch ticks)."""
    from cifarlab.plotting import TITLE_SIZE, integer_ticks, new_figure

    fig = new_figure(6, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(_epoch_progress(rows), [r["lr"] for r in rows], lw=1.2)
    ax.set_xlabel("epoch" if rows and "epoch" in rows[0] else "optimizer step")
    ax.set_xlim(left=0)
    integer_ticks(ax)
    ax.set_ylabel("learning rate")
    ax.set_title(f"LR schedule ({name}): every optimizer step", fontsize=TITLE_SIZE)
    ax.grid(alpha=0.3)
    return fig
