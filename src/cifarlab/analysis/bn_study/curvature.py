"""Loss curvature at the current weights without a step-size grid: Hessian-vector products, autograd only.

The Fig. 4 "effective beta" maximises ||grad L(w - eta g) - g|| / (eta ||g||) over a grid of eta and is
dominated by the grid's smallest step. Here the Hessian H of the batch loss at w is probed directly:

* ``top_eigenvalue``: lambda_max(H) by power iteration (shifted once if the dominant eigenvalue is negative);
* ``gradient_curvature``: g^T H g / ||g||^2 (curvature along the step) and ||H g|| / ||g|| (the eta -> 0 limit
  of the Fig. 4 effective beta);
* ``hutchinson_trace``: tr(H) with Rademacher probes, mean and standard error;
* ``eigen_density``: stochastic Lanczos quadrature (Ghorbani et al., ICML 2019), nodes and weights.

Like ``probes``, nothing writes into the model: detached parameter copies and CLONED buffers go through
``torch.func.functional_call`` (BatchNorm in training mode updates the clones' running statistics), gradients
come from ``torch.autograd.grad`` (``.grad`` untouched) and the global / private RNG states are restored.
The forward pass and the first backward (with ``create_graph``) are done once per ``HessianOperator``; each
H v is then one extra backward through the retained graph (double backward, fine for BatchNorm in train mode).
Vectors are flat float64 (norms and reorthogonalisation lose digits in float32); random vectors are drawn on
the CPU from a seeded ``torch.Generator``, so results do not depend on the device's RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from cifarlab.analysis.bn_study.probes import LossFn, cloned_buffers, named_trainable, preserved_rng


class HessianOperator:
    """H v for the batch loss at fixed weights; build with ``hessian_operator`` (one forward, graph retained)."""

    def __init__(self, model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor, loss_fn: LossFn) -> None:
        self._model = model
        self.names = list(params)
        self._leaves = [params[n].detach().clone().requires_grad_(True) for n in self.names]
        self.device = self._leaves[0].device if self._leaves else torch.device("cpu")
        self.dim = sum(t.numel() for t in self._leaves)
        with preserved_rng(self.device, model):
            out = functional_call(model, (dict(zip(self.names, self._leaves)), cloned_buffers(model)), (x,))
            loss = loss_fn(out, y)
            grads = torch.autograd.grad(loss, self._leaves, create_graph=True, allow_unused=True)
        self.loss = float(loss.detach())
        # A gradient that does not depend on the weights (unused parameter, loss linear in it) has H = 0 there.
        self._grads = [None if gr is None or not gr.requires_grad else gr for gr in grads]
        self.grad = torch.cat([(torch.zeros_like(t) if gr is None else gr.detach()).reshape(-1).double()
                               for t, gr in zip(self._leaves, grads)]) if self._leaves else torch.zeros(0)

    def matvec(self, v: Tensor) -> Tensor:
        """H v for a flat vector v (any dtype/device); returns flat float64 on the operator's device."""
        v = v.to(self.device, torch.float64)
        chunks = list(torch.split(v, [t.numel() for t in self._leaves]))
        used = [i for i, gr in enumerate(self._grads) if gr is not None]
        hv = [torch.zeros_like(t) for t in self._leaves]
        if used:
            with preserved_rng(self.device, self._model):
                parts = torch.autograd.grad([self._grads[i] for i in used], self._leaves,
                                            grad_outputs=[chunks[i].view_as(self._leaves[i]).to(self._leaves[i].dtype)
                                                          for i in used],
                                            retain_graph=True, allow_unused=True)
            hv = [h if p is None else p.detach() for h, p in zip(hv, parts)]
        return torch.cat([h.reshape(-1).double() for h in hv]) if hv else torch.zeros(0, dtype=torch.float64)

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        return torch.cat([tensors[n].detach().reshape(-1).to(self.device, torch.float64) for n in self.names])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        parts = torch.split(flat, [t.numel() for t in self._leaves])
        return {n: p.view_as(t).to(t.dtype) for n, p, t in zip(self.names, parts, self._leaves)}

    def random(self, generator: torch.Generator, kind: str = "gaussian") -> Tensor:
        """A random flat vector drawn on the CPU from ``generator`` (reproducible on any device)."""
        if kind == "rademacher":
            r = torch.randint(0, 2, (self.dim,), generator=generator, dtype=torch.float64) * 2 - 1
        else:
            r = torch.randn(self.dim, generator=generator, dtype=torch.float64)
        return r.to(self.device)


def hessian_operator(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn,
                     params: dict[str, Tensor] | None = None) -> HessianOperator:
    """Operator at ``params`` (default: copies of the model's trainable parameters) on batch (x, y)."""
    if params is None:
        params = {n: p.detach() for n, p in named_trainable(model).items()}
    return HessianOperator(model, params, x, y, loss_fn)


def hvp(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor, loss_fn: LossFn,
        v: dict[str, Tensor]) -> dict[str, Tensor]:
    """H v at ``params`` by parameter name (one-off; use ``hessian_operator`` for many products)."""
    op = hessian_operator(model, x, y, loss_fn, params)
    return op.unflatten(op.matvec(op.flatten(v)))


@dataclass
class EigenResult:
    value: float
    iterations: int
    converged: bool


def _power(matvec: Callable[[Tensor], Tensor], v: Tensor, max_iters: int, tol: float) -> EigenResult:
    # Rayleigh quotient of the iterate; stops when it changes by less than tol (relative).
    if max_iters < 1:
        raise ValueError(f"power iteration needs max_iters >= 1, got {max_iters}")
    v = v / v.norm()
    lam_prev = math.nan
    for it in range(1, max_iters + 1):
        w = matvec(v)
        lam = float(v @ w)
        w_norm = float(w.norm())
        if w_norm == 0.0:
            return EigenResult(0.0, it, True)
        if abs(lam - lam_prev) <= tol * max(abs(lam), 1e-30):
            return EigenResult(lam, it, True)
        lam_prev, v = lam, w / w_norm
    return EigenResult(lam, max_iters, False)


def top_eigenvalue(op: HessianOperator, *, max_iters: int = 100, tol: float = 1e-4,
                   generator: torch.Generator | None = None) -> EigenResult:
    """Algebraically largest eigenvalue of H by power iteration from a seeded Gaussian start.

    Power iteration finds the eigenvalue of largest MAGNITUDE. If that one is negative (mu < 0), a second run on
    H - mu I (spectrum in [0, lambda_max - mu]) finds lambda_max; iterations of both runs are counted.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if op.dim == 0:
        return EigenResult(0.0, 0, True)
    first = _power(op.matvec, op.random(gen), max_iters, tol)
    if first.value >= 0:
        return first
    mu = first.value
    second = _power(lambda v: op.matvec(v) - mu * v, op.random(gen), max_iters, tol)
    return EigenResult(second.value + mu, first.iterations + second.iterations, first.converged and second.converged)


def gradient_curvature(op: HessianOperator) -> tuple[float, float]:
    """(g^T H g / ||g||^2, ||H g|| / ||g||) at the operator's weights; (0, 0) at a stationary point."""
    g = op.grad
    gg = float(g @ g)
    if gg == 0.0:
        return 0.0, 0.0
    hg = op.matvec(g)
    return float(g @ hg) / gg, float(hg.norm()) / math.sqrt(gg)


def hutchinson_trace(op: HessianOperator, probes: int = 10,
                     generator: torch.Generator | None = None) -> tuple[float, float]:
    """(mean, standard error) of z^T H z over ``probes`` Rademacher vectors z: an unbiased estimate of tr(H).

    At least 2 probes: an estimate without its standard error is what the study must not report.
    """
    if probes < 2:
        raise ValueError(f"hutchinson_trace needs at least 2 probes for a standard error, got {probes}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    samples = []
    for _ in range(probes):
        z = op.random(gen, "rademacher")
        samples.append(float(z @ op.matvec(z)))
    arr = np.asarray(samples)
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(probes))


@dataclass
class SpectralDensity:
    """SLQ quadrature: Ritz values and weights of all starts (weights sum to 1); ``steps`` per start."""

    nodes: np.ndarray
    weights: np.ndarray
    steps: list[int]


def lanczos(op: HessianOperator, v: Tensor, steps: int, basis_dtype: torch.dtype = torch.float64,
            breakdown: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Tridiagonal (alpha, beta) of ``steps`` Lanczos steps from v with full reorthogonalisation.

    Full reorthogonalisation (Gram-Schmidt twice against all previous vectors) keeps the Ritz values free of
    spurious copies; it stores the basis, steps x dim in ``basis_dtype``. Stops early on breakdown (an invariant
    subspace: beta tiny against the scale of T), which is exact for matrices with few distinct eigenvalues.
    """
    basis = torch.zeros(steps, op.dim, dtype=basis_dtype, device=op.device)
    q, alphas, betas, scale = v / v.norm(), [], [], 0.0
    for j in range(steps):
        basis[j] = q.to(basis_dtype)
        w = op.matvec(q)
        alphas.append(float(q @ w))
        for _ in range(2):
            b = basis[: j + 1].double()
            w = w - b.T @ (b @ w)
        beta = float(w.norm())
        scale = max(scale, abs(alphas[-1]), beta)
        if j == steps - 1 or beta <= breakdown * scale:
            break
        betas.append(beta)
        q = w / beta
    return np.asarray(alphas), np.asarray(betas)


def eigen_density(op: HessianOperator, *, steps: int = 80, starts: int = 1, seed: int = 0,
                  basis_dtype: torch.dtype = torch.float64) -> SpectralDensity:
    """Stochastic Lanczos quadrature: each Gaussian start gives Ritz values theta_i and weights (U_0i)^2."""
    if steps < 1 or starts < 1:
        raise ValueError(f"eigen_density needs steps >= 1 and starts >= 1, got {steps}, {starts}")
    gen = torch.Generator().manual_seed(seed)
    nodes, weights, used = [], [], []
    for _ in range(starts):
        alphas, betas = lanczos(op, op.random(gen), min(steps, op.dim), basis_dtype)
        theta, u = np.linalg.eigh(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))
        nodes.append(theta)
        weights.append(u[0] ** 2 / starts)
        used.append(len(alphas))
    return SpectralDensity(np.concatenate(nodes), np.concatenate(weights), used)


def smoothed_density(density: SpectralDensity, *, sigma: float | None = None, grid: np.ndarray | None = None,
                     num: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(grid, phi) with phi = sum_i w_i N(grid; theta_i, sigma^2), a density that integrates to ~1 (for plots).

    Default sigma: 1 % of the Ritz range; default grid: ``num`` points over the range padded by 5 sigma.
    """
    lo, hi = float(density.nodes.min()), float(density.nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else max(1e-3 * abs(hi), 1e-6)
    if grid is None:
        grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, num)
    z = (grid[:, None] - density.nodes[None, :]) / sigma
    phi = (np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))) @ density.weights
    return grid, phi


@dataclass
class CurvatureResult:
    """The curvature scalars of one probed point (weights, batch)."""

    lambda_max: float
    gHg_over_gg: float  # g^T H g / ||g||^2
    Hg_over_g: float  # ||H g|| / ||g||
    trace: float
    trace_se: float
    grad_norm: float
    loss: float
    lambda_iterations: int
    lambda_converged: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def measure_curvature(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, *, power_iters: int = 100,
                      power_tol: float = 1e-4, trace_probes: int = 10, seed: int = 0) -> CurvatureResult:
    """All curvature scalars at the model's current weights on (x, y), the model left bit-identical."""
    op = hessian_operator(model, x, y, loss_fn)
    gen = torch.Generator().manual_seed(seed)
    top = top_eigenvalue(op, max_iters=power_iters, tol=power_tol, generator=gen)
    ghg, hg = gradient_curvature(op)
    trace, trace_se = hutchinson_trace(op, trace_probes, gen)
    return CurvatureResult(lambda_max=top.value, gHg_over_gg=ghg, Hg_over_g=hg, trace=trace, trace_se=trace_se,
                           grad_norm=float(op.grad.norm()), loss=op.loss, lambda_iterations=top.iterations,
                           lambda_converged=top.converged)


def measure_density(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, *, steps: int = 80, starts: int = 1,
                    seed: int = 0) -> SpectralDensity:
    """SLQ eigen-density of the batch-loss Hessian at the model's current weights (costlier: steps x starts H v)."""
    return eigen_density(hessian_operator(model, x, y, loss_fn), steps=steps, starts=starts, seed=seed)


__all__ = [
    "CurvatureResult", "EigenResult", "HessianOperator", "SpectralDensity", "eigen_density", "gradient_curvature",
    "hessian_operator", "hutchinson_trace", "hvp", "lanczos", "measure_curvature", "measure_density",
    "smoothed_density", "top_eigenvalue",
]
