"""Santurkar et al. (2018) Fig. 4 probes: loss landscape, gradient predictiveness, effective beta-smoothness.

At a training step with weights w and batch (x, y), g = grad L(w). For each step size eta of a grid (the
paper's: linear over [0.5, 4] x lr) we evaluate, on the SAME batch, L(w - eta g) and grad L(w - eta g), and record

* (a) loss landscape:          L(w - eta g)                               -> min / max over eta
* (b) gradient predictiveness: ||grad L(w - eta g) - g||_2                -> min / max over eta
* (c) effective beta:          ||grad L(w - eta g) - g||_2 / (eta ||g||_2) -> max over eta

and, to tell whether the grid is in the local regime: ||grad L(w - eta g) - g|| / ||g|| (about 1 or more: the
gradient has turned over, the step left the region where a Taylor expansion holds, and beta ~ 1/eta is set by
the grid) and the loss slope (L(w - eta g) - L(w)) / (eta ||g||) (-||g|| in the eta -> 0 limit). A max of beta
on the first or last grid point (``beta_at_edge``) says the grid, not the landscape, decided it; a log-spaced
grid (``eta_grid(..., spacing="log")``) reaches down to the local regime.

The probe must not perturb training. It never writes into the model: the perturbed weights and CLONES of the
buffers go through ``torch.func.functional_call``, so BatchNorm (in training mode, batch statistics, as in the
paper) updates the clones' running statistics, never the model's; ``.grad`` is not touched because gradients
come from ``torch.autograd.grad``; the global RNG state is saved and restored in case a module draws random
numbers (VGG-A has no dropout, but noisy BN and dropout variants do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class ProbeResult:
    """Everything measured at one probed step (per-eta lists in grid order)."""

    loss: float  # L(w) on the batch
    grad_norm: float  # ||g||_2
    etas: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # L(w - eta g)
    grad_diffs: list[float] = field(default_factory=list)  # ||grad L(w - eta g) - g||_2
    betas: list[float] = field(default_factory=list)  # grad_diffs / (eta ||g||)
    rel_diffs: list[float] = field(default_factory=list)  # grad_diffs / ||g||: >= ~1 means g has turned over
    loss_slopes: list[float] = field(default_factory=list)  # (L(w - eta g) - L(w)) / (eta ||g||)

    @property
    def loss_min(self) -> float:
        return min(self.losses)

    @property
    def loss_max(self) -> float:
        return max(self.losses)

    @property
    def pred_min(self) -> float:
        return min(self.grad_diffs)

    @property
    def pred_max(self) -> float:
        return max(self.grad_diffs)

    @property
    def beta(self) -> float:
        return max(self.betas)

    @property
    def beta_argmax(self) -> int:
        """Grid index of the max beta (the first one on ties)."""
        return int(np.argmax(self.betas))

    @property
    def beta_at_edge(self) -> bool:
        """The max beta sits on the first or last grid point: the grid's range, not the landscape, decided it."""
        return self.beta_argmax in (0, len(self.betas) - 1)


SPACINGS = ("linear", "log")


def eta_grid(lr: float, count: int, low: float = 0.5, high: float = 4.0, spacing: str = "linear") -> list[float]:
    """``count`` step sizes spanning [low, high] x lr: evenly (``linear``, the paper: 0.05..0.4 at lr 0.1) or
    with a constant ratio (``log``, e.g. low 1e-3: down to where the step is local)."""
    if count < 1:
        raise ValueError(f"eta grid needs at least one point, got {count}")
    if spacing not in SPACINGS:
        raise ValueError(f"eta grid spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    if spacing == "log" and low <= 0:
        raise ValueError(f"a log-spaced eta grid needs low > 0, got {low}")
    if count == 1:
        return [low * lr]
    points = np.geomspace(low, high, count) if spacing == "log" else np.linspace(low, high, count)
    points[0], points[-1] = low, high  # exact endpoints whatever the rounding of the spacing
    return [float(v) * lr for v in points]


@contextlib.contextmanager
def preserved_rng(device: torch.device | None = None, model: nn.Module | None = None) -> Iterator[None]:
    """Restore the CPU (and CUDA) global RNG state on exit, so a probe never shifts later random draws.

    With ``model``, also the private generators of its modules (``_generators`` dicts, e.g. noisy BN), whose
    draws during a probe's forward passes would otherwise change the noise of the following training steps.
    """
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if device is not None and device.type == "cuda" else None
    private = [(g, g.get_state()) for m in (model.modules() if model is not None else ())
               for g in getattr(m, "_generators", {}).values()]
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for g, state in private:
            g.set_state(state)


def named_trainable(model: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def cloned_buffers(model: nn.Module) -> dict[str, Tensor]:
    # Clones: BN in training mode updates running_mean/var/num_batches_tracked in place on what it is given.
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def loss_and_grads(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor,
                   loss_fn: LossFn) -> tuple[float, dict[str, Tensor]]:
    """L and grad L at ``params`` (detached tensors) on (x, y), without touching the model's state."""
    leaves = {n: t.detach().requires_grad_(True) for n, t in params.items()}
    out = functional_call(model, (leaves, cloned_buffers(model)), (x,))
    loss = loss_fn(out, y)
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return float(loss.detach()), {
        n: (torch.zeros_like(t) if gr is None else gr.detach()) for (n, t), gr in zip(leaves.items(), grads)
    }


def global_norm(tensors: Sequence[Tensor]) -> float:
    """||concat(tensors)||_2, accumulated in float64 (many small squares; float32 loses digits)."""
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


@torch.no_grad()
def _shifted(params: dict[str, Tensor], grads: dict[str, Tensor], eta: float) -> dict[str, Tensor]:
    # A fresh tensor w - eta*g from the saved copy: nothing is subtracted from (and later added back to) w.
    return {n: params[n] - eta * grads[n] for n in params}


def probe_step(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, etas: Sequence[float],
               grads: dict[str, Tensor] | None = None, loss: float | None = None) -> ProbeResult:
    """Fig. 4 measurements at the model's current weights on batch (x, y).

    ``grads``: g = grad L(w) by parameter name when the caller already has it (the training step's gradient,
    same batch, same mode) and ``loss`` its L(w) (saves a forward pass); otherwise they are computed here.
    The model keeps its mode (training mode for the paper's protocol: BN normalises with the batch statistics).
    """
    params = {n: p.detach().clone() for n, p in named_trainable(model).items()}
    device = next(iter(params.values())).device if params else None
    with preserved_rng(device, model):
        if grads is None:
            loss0, g = loss_and_grads(model, params, x, y, loss_fn)
        else:
            g = {n: (torch.zeros_like(params[n]) if grads.get(n) is None else grads[n].detach().clone())
                 for n in params}
            if loss is not None:
                loss0 = float(loss)
            else:
                with torch.no_grad():
                    loss0 = float(loss_fn(functional_call(model, (params, cloned_buffers(model)), (x,)), y))
        g_norm = global_norm(list(g.values()))
        result = ProbeResult(loss=loss0, grad_norm=g_norm)
        for eta in etas:
            loss_eta, g_eta = loss_and_grads(model, _shifted(params, g, eta), x, y, loss_fn)
            diff = global_norm([g_eta[n] - g[n] for n in params])
            result.etas.append(float(eta))
            result.losses.append(loss_eta)
            result.grad_diffs.append(diff)
            # g = 0 (a stationary point) has no defined smoothness along -g: report 0, not NaN.
            result.betas.append(diff / (eta * g_norm) if g_norm > 0 else 0.0)
            result.rel_diffs.append(diff / g_norm if g_norm > 0 else 0.0)
            result.loss_slopes.append((loss_eta - loss0) / (eta * g_norm) if g_norm > 0 else 0.0)
    return result


def loss_band(curves: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Course protocol: at each step, min and max of the training loss OVER the runs (one run per LR).

    Runs are truncated to the shortest one (a diverged or shorter run must not leave steps with fewer runs).
    """
    if not curves:
        raise ValueError("loss_band needs at least one curve")
    n = min(len(c) for c in curves)
    stacked = np.stack([np.asarray(c[:n], dtype=np.float64) for c in curves])
    return stacked.min(axis=0), stacked.max(axis=0)


__all__ = [
    "SPACINGS", "ProbeResult", "cloned_buffers", "eta_grid", "global_norm", "loss_and_grads", "loss_band",
    "named_trainable", "preserved_rng", "probe_step",
]
