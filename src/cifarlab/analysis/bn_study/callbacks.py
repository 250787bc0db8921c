"""The study's probes as engine callbacks: Fig. 4 along the gradient, Hessian curvature, Definition 2.1 (ICS).

Each measures at chosen steps without perturbing training (probes.py / curvature.py / ics.py work on copies
through ``functional_call`` and restore every RNG stream), keeps its records in ``state_dict()`` so they survive
an interrupted and resumed run, and writes them to ``<run_dir>/<file>`` at the end of the run.

With ``save_points=True`` the Fig. 4 and curvature probes also save what they measured at
(``probe_points/step_NNNNNN.pt``: weights and buffers, optimizer state, the batch's indices into ``train_x``),
so ``reprobe.reprobe_run`` can recompute every number later.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cifarlab.analysis.bn_study.curvature import eigen_density, hessian_operator, measure_curvature
from cifarlab.analysis.bn_study.ics import ics_measure, layer_groups, snapshot_params
from cifarlab.analysis.bn_study.probes import named_trainable, probe_step
from cifarlab.config import to_dict
from cifarlab.engine.callbacks import Callback, StepContext
from cifarlab.engine.checkpoint import save_checkpoint
from cifarlab.errors import ConfigError
from cifarlab.io import atomic_write_json

POINTS_DIR = "probe_points"
POINT_FORMAT = "cifarlab-probe-point-v1"


def point_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / POINTS_DIR / f"step_{step:06d}.pt"


def save_probe_point(trainer: Any, ctx: StepContext) -> None:
    """What a probe at this step saw, saved atomically; an existing file is kept (resumed run, second probe)."""
    path = point_path(trainer.run_dir, ctx.step)
    if path.exists():
        return
    save_checkpoint(path, {"format": POINT_FORMAT, "step": ctx.step, "epoch": ctx.epoch,
                           "config": to_dict(trainer.cfg), "model": trainer.raw_model.state_dict(),
                           "optimizer": trainer.optimizer.state_dict(), "indices": ctx.indices.detach().cpu()})


def point_seed(seed: int, step: int, stream: int = 0) -> int:
    """The random vectors' seed at one probed step: a function of (seed, step) only, so a re-probe draws the same."""
    return (seed * 1_000_003 + step * 7919 + stream * 104_729 + 12345) % (2**63 - 1)


class _Recorder(Callback):
    """Records rows, times itself, saves rows + seconds in the checkpoint and in ``file`` at the end."""

    file = ""

    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[dict[str, Any]] = []
        self.seconds = 0.0

    def due(self, ctx: StepContext) -> bool:
        return self.every > 0 and ctx.step % self.every == 0

    def begin(self, trainer: Any, ctx: StepContext) -> bool:
        """Whether to measure at this step; saves the probe point first when asked to (``save_points``)."""
        if not self.due(ctx):
            return False
        if getattr(self, "save_points", False):
            save_probe_point(trainer, ctx)
        return True

    def meta(self) -> dict[str, Any]:
        """The probe's settings, written next to its rows (a re-probe reads them)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.seconds = list(state["rows"]), float(state["seconds"])

    def on_fit_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        atomic_write_json(trainer.run_dir / self.file, {"every": self.every, **self.meta(),
                                                        "seconds": self.seconds, "rows": self.rows})
        summary[f"{self.key}_seconds"] = self.seconds


class Fig4Probe(_Recorder):
    """Santurkar et al. Fig. 4 at every ``every``-th step: L, grad L along -g at each eta, on the step's batch,
    with the step's own gradient (same weights, same batch, training-mode BN)."""

    file = "probes.json"

    def __init__(self, every: int, etas: list[float], save_points: bool = False) -> None:
        super().__init__(every)
        self.etas = list(etas)
        self.save_points = save_points

    @property
    def key(self) -> str:
        return "fig4"

    def meta(self) -> dict[str, Any]:
        return {"etas": self.etas}

    def on_after_backward(self, trainer: Any, ctx: StepContext) -> None:
        if not self.begin(trainer, ctx):
            return
        start = time.perf_counter()
        model = trainer.raw_model
        grads = {name: p.grad for name, p in named_trainable(model).items()}
        r = probe_step(model, ctx.x, ctx.y, F.cross_entropy, self.etas, grads=grads, loss=float(ctx.loss))
        self.rows.append({"step": ctx.step, **fig4_row(r)})
        self.seconds += time.perf_counter() - start


def fig4_row(r: Any) -> dict[str, Any]:
    """A ``ProbeResult`` as a probes.json row (without its step)."""
    return {"loss": r.loss, "grad_norm": r.grad_norm, "etas": r.etas, "losses": r.losses,
            "grad_diffs": r.grad_diffs, "betas": r.betas, "rel_diffs": r.rel_diffs, "loss_slopes": r.loss_slopes,
            "beta_at_edge": r.beta_at_edge}


def curvature_row(model: nn.Module, x: Tensor, y: Tensor, step: int, *, power_iters: int, power_tol: float,
                  trace_probes: int, seed: int, density_steps: int = 0) -> dict[str, Any]:
    """Curvature scalars (and, with ``density_steps``, the SLQ density) at the model's weights on (x, y).

    Random vectors come from ``point_seed(seed, step)``: the same numbers whenever this point is re-measured.
    """
    start = time.perf_counter()
    r = measure_curvature(model, x, y, F.cross_entropy, power_iters=power_iters, power_tol=power_tol,
                          trace_probes=trace_probes, seed=point_seed(seed, step))
    row: dict[str, Any] = {"step": step, **r.to_dict(), "seconds": time.perf_counter() - start}
    if density_steps > 0:
        start = time.perf_counter()
        # float32 Lanczos basis: density_steps x dim floats is the memory bound (the HVPs stay float64).
        d = eigen_density(hessian_operator(model, x, y, F.cross_entropy), steps=density_steps, starts=1,
                          seed=point_seed(seed, step, 1), basis_dtype=torch.float32)
        row.update(density_nodes=d.nodes.tolist(), density_weights=d.weights.tolist(),
                   density_seconds=time.perf_counter() - start)
    return row


class CurvatureProbe(_Recorder):
    """Hessian curvature of the step's batch loss at the step's weights (before the update), every ``every``
    steps: lambda_max (power iteration), g^T H g / ||g||^2, ||H g|| / ||g||, Hutchinson trace +- SE; plus the SLQ
    eigen-density at the steps in ``density_at``. No step-size grid: what the Fig. 4 beta tries to estimate."""

    file = "curvature.json"

    def __init__(self, every: int, power_iters: int = 50, power_tol: float = 1e-3, trace_probes: int = 8,
                 density_at: Iterable[int] = (), density_steps: int = 40, seed: int = 0,
                 save_points: bool = False) -> None:
        super().__init__(every)
        self.power_iters, self.power_tol, self.trace_probes = power_iters, power_tol, trace_probes
        self.density_at, self.density_steps, self.seed = sorted(set(density_at)), density_steps, seed
        self.save_points = save_points

    @property
    def key(self) -> str:
        return "curvature"

    def meta(self) -> dict[str, Any]:
        return {"power_iters": self.power_iters, "power_tol": self.power_tol, "trace_probes": self.trace_probes,
                "density_at": self.density_at, "density_steps": self.density_steps, "seed": self.seed}

    def due(self, ctx: StepContext) -> bool:
        return super().due(ctx) or ctx.step in self.density_at

    def on_after_backward(self, trainer: Any, ctx: StepContext) -> None:
        if not self.begin(trainer, ctx):
            return
        start = time.perf_counter()
        density = self.density_steps if ctx.step in self.density_at else 0
        self.rows.append(curvature_row(trainer.raw_model, ctx.x, ctx.y, ctx.step, power_iters=self.power_iters,
                                       power_tol=self.power_tol, trace_probes=self.trace_probes, seed=self.seed,
                                       density_steps=density))
        self.seconds += time.perf_counter() - start


class ICSProbe(_Recorder):
    """Definition 2.1 at every ``every``-th step, for the 1-based conv/linear ``layers``: the step's gradient
    before and after the earlier layers took this step's actual update."""

    file = "ics.json"

    def __init__(self, every: int, layers: list[int]) -> None:
        super().__init__(every)
        self.layers = list(layers)
        self._pending: tuple[Any, ...] | None = None

    @property
    def key(self) -> str:
        return "ics"

    def on_fit_start(self, trainer: Any) -> None:
        groups = len(layer_groups(trainer.raw_model))
        if max(self.layers) > groups:
            raise ConfigError(f"bn-study setting 'ics.layers': {self.layers} exceeds the model's {groups} "
                              f"conv/linear layers")

    def on_after_backward(self, trainer: Any, ctx: StepContext) -> None:
        if self.due(ctx):
            start = time.perf_counter()
            self._pending = (snapshot_params(trainer.raw_model), ctx.x, ctx.y)
            self.seconds += time.perf_counter() - start

    def on_step_end(self, trainer: Any, ctx: StepContext) -> None:
        if self._pending is None:
            return
        start = time.perf_counter()
        before, x, y = self._pending
        self._pending = None
        model = trainer.raw_model
        for r in ics_measure(model, x, y, F.cross_entropy, before, snapshot_params(model), self.layers):
            self.rows.append({"step": ctx.step, "layer": r.layer, "l2": r.l2, "cos": r.cos,
                              "grad_norm": r.grad_norm})
        self.seconds += time.perf_counter() - start


__all__ = ["POINTS_DIR", "CurvatureProbe", "Fig4Probe", "ICSProbe", "curvature_row", "fig4_row", "point_path",
           "point_seed", "save_probe_point"]
