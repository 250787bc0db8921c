"""Muon for the conv filters, Nesterov SGD for the rest: the optimizer of airbench94_muon (Keller Jordan, 2024).

Muon (MomentUm Orthogonalized by Newton-Schulz) replaces a filter's momentum by the nearest semi-orthogonal
matrix (its singular values pushed towards 1), so every direction of the (out, in*k*k) filter matrix moves by a
similar amount whatever the gradient's scale: the step size is the LR alone. Filters are renormalised to norm
sqrt(out) before each step (no weight decay is needed on them). ``torch.optim.Muon`` takes 2-D parameters only
and no renormalisation, so conv filters need this short version; ``tests/test_muon.py`` checks it against
``torch.optim.Muon`` on a matrix and against ``torch.optim.SGD`` on the other parameters.

Groups: "filters" (conv kernels, ndim >= 3: Muon, LR ``optim.lr``), "head" (ndim 2: SGD, LR x ``head_lr_mult``)
and "bias" (ndim <= 1: BN shifts and biases, SGD, LR x ``bn_bias_lr_mult``). ``optim.weight_decay`` is
airbench's per-step decay at the base LR, for the SGD groups: each gets a coupled decay ``weight_decay / its base
LR``, which stays fixed while the schedule moves the LR.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cifarlab.engine.environment import cpu_has_native_bf16
from cifarlab.engine.scratch_optim import ScratchSGD

# The quintic Newton-Schulz coefficients of Muon (maximal slope at zero; see torch.optim.Muon's docs).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def ns_dtype(device: torch.device) -> torch.dtype:
    """bf16, as Muon does (the iteration is robust to its rounding), where the hardware has it; fp32 on CPUs
    without bf16 in hardware, where emulated bf16 matmuls are some 30x slower than fp32 (docs/benchmarks.md)."""
    return torch.bfloat16 if device.type != "cpu" or cpu_has_native_bf16() else torch.float32


def orthogonalise(g: Tensor, steps: int, eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """~ U V^T of the matrix ``g`` = U S V^T (singular values land in ~[0.5, 1.5]), by ``steps`` Newton-Schulz
    iterations in ``dtype`` (``ns_dtype``); the matrices are small."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class MuonSGD(ScratchSGD):
    """One optimizer, two update rules by group: ``muon=True`` groups get Muon, the others ScratchSGD's Nesterov SGD
    (torch's recurrence, dampening 0). One object keeps the LR schedule, Lookahead and checkpoints as for any
    optimizer."""

    def __init__(self, groups: list[dict[str, Any]], lr: float, momentum: float, nesterov: bool,
                 muon_momentum: float, ns_steps: int, renormalise: bool = True) -> None:
        super().__init__(groups, lr=lr, momentum=momentum, nesterov=nesterov)
        first = next((p for g in self.param_groups for p in g["params"]), None)
        self.ns_dtype = ns_dtype(first.device if first is not None else torch.device("cpu"))
        for group in self.param_groups:
            for key, value in (("muon", False), ("muon_momentum", muon_momentum), ("ns_steps", ns_steps),
                               ("renormalise", renormalise)):
                group.setdefault(key, value)

    def update(self, p: Tensor, group: dict[str, Any]) -> None:
        (self._muon_step if group["muon"] else self.sgd_update)(p, group)

    def _muon_step(self, p: Tensor, group: dict[str, Any]) -> None:
        g, m = p.grad, group["muon_momentum"]
        buf = self.state[p].get("momentum_buffer")
        if buf is None:
            buf = self.state[p]["momentum_buffer"] = torch.zeros_like(g)
        buf.mul_(m).add_(g)
        g = g.add(buf, alpha=m) if group["nesterov"] else buf
        if group["renormalise"]:
            p.mul_(len(p) ** 0.5 / p.norm())
        update = orthogonalise(g.reshape(len(g), -1), group["ns_steps"], dtype=self.ns_dtype).view(g.shape)
        p.add_(update, alpha=-group["lr"])


def muon_groups(params: list[Tensor], lr: float, bias_lr_mult: float, head_lr_mult: float,
                decay_per_step: float) -> list[dict[str, Any]]:
    """filters (Muon), head (ndim 2) and bias (ndim <= 1) groups, filters first (steps.csv logs group 0's LR)."""
    kinds = {"filters": [p for p in params if p.ndim >= 3], "head": [p for p in params if p.ndim == 2],
             "bias": [p for p in params if p.ndim <= 1]}
    lrs = {"filters": lr, "head": lr * head_lr_mult, "bias": lr * bias_lr_mult}
    return [{"params": ps, "name": kind, "lr": lrs[kind], "muon": kind == "filters",
             "weight_decay": 0.0 if kind == "filters" else decay_per_step / lrs[kind]}
            for kind, ps in kinds.items() if ps]


__all__ = ["NS_COEFFICIENTS", "MuonSGD", "muon_groups", "orthogonalise"]
