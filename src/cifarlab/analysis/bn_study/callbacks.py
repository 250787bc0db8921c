"""The study's probes as engine callbacks: Fig. 4 along the gradient, and Definition 2.1 (ICS).

Each measures at chosen steps without perturbing training (probes.py / ics.py work on copies through
``functional_call`` and restore every RNG stream), keeps its records in ``state_dict()`` so they survive an
interrupted and resumed run, and writes them to ``<run_dir>/<file>`` at the end of the run.
"""

from __future__ import annotations

import time
from typing import Any

import torch.nn.functional as F

from cifarlab.analysis.bn_study.ics import ics_measure, layer_groups, snapshot_params
from cifarlab.analysis.bn_study.probes import named_trainable, probe_step
from cifarlab.engine.callbacks import Callback, StepContext
from cifarlab.errors import ConfigError
from cifarlab.io import atomic_write_json


class _Recorder(Callback):
    """Records rows, times itself, saves rows + seconds in the checkpoint and in ``file`` at the end."""

    file = ""

    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[dict[str, Any]] = []
        self.seconds = 0.0

    def due(self, ctx: StepContext) -> bool:
        return self.every > 0 and ctx.step % self.every == 0

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.seconds = list(state["rows"]), float(state["seconds"])

    def on_fit_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        atomic_write_json(trainer.run_dir / self.file, {"every": self.every, "seconds": self.seconds,
                                                        "rows": self.rows})
        summary[f"{self.key}_seconds"] = self.seconds


class Fig4Probe(_Recorder):
    """Santurkar et al. Fig. 4 at every ``every``-th step: L, grad L along -g at each eta, on the step's batch,
    with the step's own gradient (same weights, same batch, training-mode BN)."""

    file = "probes.json"

    def __init__(self, every: int, etas: list[float]) -> None:
        super().__init__(every)
        self.etas = list(etas)

    @property
    def key(self) -> str:
        return "fig4"

    def on_after_backward(self, trainer: Any, ctx: StepContext) -> None:
        if not self.due(ctx):
            return
        start = time.perf_counter()
        model = trainer.raw_model
        grads = {name: p.grad for name, p in named_trainable(model).items()}
        r = probe_step(model, ctx.x, ctx.y, F.cross_entropy, self.etas, grads=grads, loss=float(ctx.loss))
        self.rows.append({"step": ctx.step, "loss": r.loss, "grad_norm": r.grad_norm, "etas": r.etas,
                          "losses": r.losses, "grad_diffs": r.grad_diffs, "betas": r.betas})
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


__all__ = ["Fig4Probe", "ICSProbe"]
