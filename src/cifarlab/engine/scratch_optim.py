"""Optimizers written out by hand: the update math is plain tensor arithmetic on ``p.grad``.

``torch.optim.Optimizer`` is subclassed only for its plumbing (param_groups, state, state_dict, zero_grad), so
these work with the LR schedule, GradScaler and checkpoints like the built-in ones; no torch.optim update
function and no torch.nn helper is called.

* ``ScratchSGD``: SGD with momentum, dampening, Nesterov and (coupled) weight decay, the exact recurrence of
  ``torch.optim.SGD``::

      g = grad + wd * w
      b = g                          (first step)
      b = mu * b + (1 - dampening) * g   (later steps)
      d = g + mu * b  (nesterov)  or  b
      w = w - lr * d

* ``Signum``: sign-SGD with momentum (Bernstein et al., 2018, "signSGD: compressed optimisation for non-convex
  problems")::

      g = grad + wd * w
      m = beta * m + (1 - beta) * g      (m starts at 0)
      w = w - lr * sign(m)

  With ``beta = 0`` it is plain signSGD. Every coordinate moves by exactly +-lr (or 0), whatever the gradient
  scale, so LRs are much smaller than SGD's (~1e-4 .. 1e-3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class ScratchSGD(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid ScratchSGD settings lr={lr} momentum={momentum} weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, group)
        return loss

    def update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """One parameter's step (subclasses choose a rule per group: MuonSGD)."""
        self.sgd_update(p, group)

    def sgd_update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """One parameter's update by the recurrence above (also MuonSGD's rule for its non-filter groups)."""
        lr, mu, damp = group["lr"], group["momentum"], group["dampening"]
        d = p.grad
        if group["weight_decay"] != 0:
            d = d + group["weight_decay"] * p
        if mu != 0:
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                # First step: the buffer is the gradient itself (no dampening), as torch does.
                buf = d.clone()
                state["momentum_buffer"] = buf
            else:
                buf.mul_(mu).add_(d * (1 - damp))
            d = d + mu * buf if group["nesterov"] else buf
        p.sub_(lr * d)


class Signum(torch.optim.Optimizer):
    def __init__(
        self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"invalid Signum settings lr={lr} momentum={momentum} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    g = g + wd * p
                if beta != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    m = state["momentum_buffer"]
                    m.mul_(beta).add_(g * (1 - beta))
                    g = m
                p.sub_(lr * torch.sign(g))
        return loss
