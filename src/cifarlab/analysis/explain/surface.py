"""Loss surfaces after Li et al. (NeurIPS 2018), "Visualizing the Loss Landscape of Neural Nets", and linear
interpolation between two weight vectors (Goodfellow et al., ICLR 2015).

Filter normalisation: a random Gaussian direction d is rescaled filter by filter (output channel = dim 0 of
a conv or linear weight), d_i <- d_i / ||d_i|| * ||w_i||, so that moving along d perturbs every filter in
proportion to its own size. Without it, the scale invariance of ReLU nets with BatchNorm (w_i and 10 w_i
compute the same function) makes surfaces of different nets, or of one net at different weight norms,
incomparable. Parameters with fewer than 2 dims (biases, BN weight and bias) get a zero direction (Li et al.'s
``ignore='biasbn'``); BN running mean/var are not moved unless asked (``include_bn_stats``).

Every loss is evaluated in eval mode (BN uses its running statistics) over a fixed list of training batches,
with plain cross-entropy (as validation and test). The model is never written to: the shifted weights go
through ``torch.func.functional_call`` as new tensors, so its parameters and buffers stay bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

Batches = Sequence[tuple[Tensor, Tensor]]
State = dict[str, Tensor]


def bn_stat_keys(model: nn.Module) -> tuple[list[str], list[str]]:
    """State-dict names of the BatchNorm running means and running variances."""
    means, variances = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            prefix = f"{name}." if name else ""
            if module.running_mean is not None:
                means.append(prefix + "running_mean")
                variances.append(prefix + "running_var")
    return means, variances


def base_state(model: nn.Module) -> State:
    """The model's floating and integer state (parameters and buffers), detached; never modified."""
    return {k: v.detach() for k, v in model.state_dict().items()}


def weight_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    """Shapes of the filter-normalised weights (parameters with >= 2 dims) in order: two models with the same
    list draw the same raw random directions from the same seed (e.g. VGG-A and VGG-A + BN)."""
    return [tuple(p.shape) for p in model.parameters() if p.dim() >= 2]


def _per_filter(t: Tensor) -> Tensor:
    """Norm of each output filter (dim 0) in float64, shaped to broadcast against ``t``."""
    return t.detach().double().reshape(t.shape[0], -1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def filter_normalized_direction(model: nn.Module, generator: torch.Generator | None = None,
                                include_bn_stats: bool = False) -> State:
    """A random direction in weight space, filter-normalised (Li et al. 2018, Sec. 4).

    Returns a tensor for every floating-point entry of ``model.state_dict()`` (parameters and buffers):

    * parameters with >= 2 dims (conv and linear weights): Gaussian, then each output filter rescaled to the
      norm of the same filter of the weights (so ||d_i|| = ||w_i|| for every i, up to float32 rounding);
    * parameters with < 2 dims (biases, BN weight/bias): zero;
    * BN running mean/var: zero, or with ``include_bn_stats`` a Gaussian normalised the same way per channel
      (each channel is its own "filter": d_c = +-|s_c|);
    * other floating buffers: zero.

    Draws come from ``generator`` (a CPU generator; the global RNG if None) in the order of ``model.parameters()``,
    weights first, BN statistics afterwards, so models with the same ``weight_shapes`` get the same raw draws.
    """
    state = model.state_dict()
    weights = {name for name, p in model.named_parameters() if p.dim() >= 2}
    means, variances = bn_stat_keys(model)
    direction: State = {k: torch.zeros_like(v) for k, v in state.items() if v.is_floating_point()}
    for name in (n for n, _ in model.named_parameters() if n in weights):
        w = state[name]
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.device).double()
        d = d * (_per_filter(w) / _per_filter(d).clamp_min(1e-30))
        direction[name] = d.to(w.dtype)
    if include_bn_stats:
        for name in [*means, *variances]:
            s = state[name]
            r = torch.randn(s.shape, generator=generator, dtype=torch.float32).to(s.device)
            direction[name] = (torch.sign(r).double() * s.detach().double().abs()).to(s.dtype)
    return direction


def direction_cosine(a: State, b: State) -> float:
    """cos(a, b) over all entries (random high-dimensional directions are nearly orthogonal)."""
    dot = sum(float((a[k].double() * b[k].double()).sum()) for k in a)
    na = math.sqrt(sum(float((a[k].double() ** 2).sum()) for k in a))
    nb = math.sqrt(sum(float((b[k].double() ** 2).sum()) for k in b))
    return dot / (na * nb) if na > 0 and nb > 0 else float("nan")


def shifted(base: State, directions: Sequence[State], coefs: Sequence[float], variances: Sequence[str] = ()) -> State:
    """base + sum_i coefs[i] * directions[i] as NEW tensors (entries without a direction are passed through).
    Running variances moved by a direction are clamped at 0 (BN adds eps), so far points stay finite."""
    out: State = {}
    var_set = set(variances)
    for k, v in base.items():
        t = v
        if v.is_floating_point():
            for d, c in zip(directions, coefs):
                if c != 0.0 and k in d:
                    t = t + c * d[k]
            if k in var_set and t is not v:
                t = t.clamp_min(0.0)
        out[k] = t
    return out


def merge_batches(batches: Batches, max_images: int = 256) -> list[tuple[Tensor, Tensor]]:
    """Concatenate consecutive batches into chunks of at most ``max_images`` images: in eval mode the loss does
    not depend on how images are batched, and on a CPU a few forward passes of ~256 images are faster than many
    small ones (much larger ones spend their time page-faulting fresh activation buffers)."""
    out: list[tuple[Tensor, Tensor]] = []
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for x, y in batches:
        if xs and sum(len(t) for t in ys) + len(y) > max_images:
            out.append((torch.cat(xs) if len(xs) > 1 else xs[0], torch.cat(ys) if len(ys) > 1 else ys[0]))
            xs, ys = [], []
        xs.append(x)
        ys.append(y)
    if xs:
        out.append((torch.cat(xs) if len(xs) > 1 else xs[0], torch.cat(ys) if len(ys) > 1 else ys[0]))
    return out


@torch.no_grad()
def evaluate_state(model: nn.Module, state: State, batches: Batches) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` with ``state`` on ``batches``, in eval mode, without writing to
    the model (``functional_call``); its train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), dtype=torch.float64)
        correct, n = 0, 0
        for x, y in batches:
            logits = functional_call(model, state, (x,)).float()
            total += F.cross_entropy(logits, y, reduction="sum").double().cpu()
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    finally:
        model.train(was_training)
    return float(total) / max(n, 1), correct / max(n, 1)


def coordinates(points: int, span: float) -> np.ndarray:
    """``points`` (odd) symmetric coordinates on [-span, span]; the centre is exactly 0, the ends exactly +-span."""
    half = points // 2
    return span * np.arange(-half, half + 1, dtype=np.float64) / max(half, 1)


def interpolation_alphas(points: int, margin: float = 0.25) -> np.ndarray:
    """``points`` evenly spaced values on [0, 1] (exactly 0 and 1 included), continued with the same step by
    about ``margin`` on both sides: 11 points -> -0.2, -0.1, ..., 1.2."""
    steps = max(int(points) - 1, 1)
    extra = round(margin * steps)
    return np.arange(-extra, steps + extra + 1, dtype=np.float64) / steps


def _bar(total: int, desc: str, progress: bool | None) -> Any:
    return tqdm(total=total, desc=desc, unit="pt", leave=False, dynamic_ncols=True,
                disable=None if progress is None else not progress)


def loss_line(model: nn.Module, direction: State, alphas: Sequence[float], batches: Batches,
              variances: Sequence[str] = (), progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """L(w + a d) and accuracy for each a in ``alphas``."""
    base, batches = base_state(model), merge_batches(batches)
    losses, accs = np.empty(len(alphas)), np.empty(len(alphas))
    with _bar(len(alphas), "1-D surface", progress) as bar:
        for i, a in enumerate(alphas):
            losses[i], accs[i] = evaluate_state(model, shifted(base, [direction], [float(a)], variances), batches)
            bar.update()
    return losses, accs


def loss_grid(model: nn.Module, dx: State, dy: State, alphas: Sequence[float], betas: Sequence[float],
              batches: Batches, variances: Sequence[str] = (),
              progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """L(w + a dx + b dy) and accuracy on the grid: arrays of shape (len(betas), len(alphas)), row j = betas[j]."""
    base, batches = base_state(model), merge_batches(batches)
    losses = np.empty((len(betas), len(alphas)))
    accs = np.empty_like(losses)
    with _bar(len(alphas) * len(betas), "2-D surface", progress) as bar:
        for j, b in enumerate(betas):
            for i, a in enumerate(alphas):
                point = shifted(base, [dx, dy], [float(a), float(b)], variances)
                losses[j, i], accs[j, i] = evaluate_state(model, point, batches)
                bar.update()
    return losses, accs


def interpolate(model: nn.Module, state_a: State, state_b: State, alphas: Sequence[float], batches: Batches,
                progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """L((1 - a) theta_a + a theta_b) and accuracy for each a (0 gives exactly ``state_a``, 1 exactly ``state_b``).

    Every floating entry is interpolated linearly, BN running means included; BN running variances are
    interpolated geometrically, va^(1-a) vb^a, so they stay positive when a leaves [0, 1] (a linear
    extrapolation goes negative and blows the loss up). Integer buffers (``num_batches_tracked``) are taken
    from ``state_b``.
    """
    _, variances = bn_stat_keys(model)
    var_set = set(variances)
    batches = merge_batches(batches)
    losses, accs = np.empty(len(alphas)), np.empty(len(alphas))
    with _bar(len(alphas), "interpolation", progress) as bar:
        for i, a in enumerate(alphas):
            a = float(a)
            point: State = {}
            for k, vb in state_b.items():
                va = state_a[k]
                if not vb.is_floating_point() or a == 1.0:
                    point[k] = vb
                elif a == 0.0:
                    point[k] = va
                elif k in var_set:
                    lo = torch.finfo(vb.dtype).tiny
                    point[k] = torch.exp(torch.lerp(va.to(vb.dtype).clamp_min(lo).log(), vb.clamp_min(lo).log(), a))
                else:
                    point[k] = torch.lerp(va.to(vb.dtype), vb, a)
            losses[i], accs[i] = evaluate_state(model, point, batches)
            bar.update()
    return losses, accs


# ---------------------------------------------------------------------------------------------------------------
# Numbers derived from a surface


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def line_stats(alphas: np.ndarray, losses: np.ndarray, span: float) -> dict[str, Any]:
    """Centre loss, min/max and a sharpness proxy: the curvature 2a of a least-squares quadratic a x^2 + b x + c
    fitted to the points with |alpha| <= span/4 (all points if fewer than 3 there)."""
    ok = np.isfinite(losses)
    centre = int(np.argmin(np.abs(alphas)))
    near = ok & (np.abs(alphas) <= span / 4 + 1e-12)
    if near.sum() < 3:
        near = ok
    curvature = float(2 * np.polyfit(alphas[near], losses[near], 2)[0]) if near.sum() >= 3 else float("nan")
    return {"loss_centre": _finite_or_none(losses[centre]),
            "loss_min": _finite_or_none(np.min(losses[ok])) if ok.any() else None,
            "loss_max": _finite_or_none(np.max(losses[ok])) if ok.any() else None,
            "non_finite_points": int((~ok).sum()), "curvature_1d": _finite_or_none(curvature)}


def grid_stats(alphas: np.ndarray, betas: np.ndarray, losses: np.ndarray, span: float) -> dict[str, Any]:
    """Centre loss, min/max, and sharpness proxies over the disc of radius span/2 around the trained weights:
    the largest and the mean loss rise above the centre."""
    ok = np.isfinite(losses)
    ci, cj = int(np.argmin(np.abs(alphas))), int(np.argmin(np.abs(betas)))
    centre = float(losses[cj, ci])
    xx, yy = np.meshgrid(alphas, betas)
    disc = ok & (np.hypot(xx, yy) <= span / 2 + 1e-12)
    rise = losses[disc] - centre
    return {"loss_centre": _finite_or_none(centre),
            "loss_min": _finite_or_none(np.min(losses[ok])) if ok.any() else None,
            "loss_max": _finite_or_none(np.max(losses[ok])) if ok.any() else None,
            "non_finite_points": int((~ok).sum()),
            "max_rise_half_span": _finite_or_none(float(rise.max())) if rise.size else None,
            "mean_rise_half_span": _finite_or_none(float(rise.mean())) if rise.size else None}


def interpolation_stats(alphas: np.ndarray, losses: np.ndarray) -> dict[str, Any]:
    """Losses at both ends and the barrier: max over a in [0, 1] of L(a) - ((1 - a) L(0) + a L(1))."""
    i0, i1 = int(np.argmin(np.abs(alphas))), int(np.argmin(np.abs(alphas - 1)))
    inside = (alphas >= 0) & (alphas <= 1) & np.isfinite(losses)
    chord = (1 - alphas) * losses[i0] + alphas * losses[i1]
    excess = np.where(inside, losses - chord, -np.inf)
    k = int(np.argmax(excess))
    return {"loss_at_0": _finite_or_none(losses[i0]), "loss_at_1": _finite_or_none(losses[i1]),
            "barrier": _finite_or_none(float(excess[k])) if inside.any() else None,
            "barrier_alpha": float(alphas[k]) if inside.any() else None,
            "loss_max_inside": _finite_or_none(float(np.max(losses[inside]))) if inside.any() else None}


def display_range(values: Sequence[np.ndarray], zmax: float | None) -> tuple[float, float]:
    """Common (vmin, vmax) for drawing: min of all finite values; max clipped at ``zmax`` (default
    min(10, max), Li et al.'s vmax), never below vmin + a little."""
    finite = np.concatenate([np.asarray(v, dtype=np.float64)[np.isfinite(v)].ravel() for v in values])
    if finite.size == 0:
        return 0.0, 1.0
    vmin = float(finite.min())
    vmax = float(min(finite.max(), 10.0) if zmax is None else zmax)
    return vmin, max(vmax, vmin + 1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Drawing (on axes the caller owns, so that --compare can draw two runs on one figure with one scale)


def draw_line(ax: Any, alphas: np.ndarray, losses: np.ndarray, accs: np.ndarray | None, label: str = "",
              color: str = "tab:blue", ylim: tuple[float, float] | None = None) -> None:
    ax.plot(alphas, losses, color=color, lw=1.6, marker="o", ms=2.5, label=f"{label} loss".strip())
    ax.axvline(0.0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("α (filter-normalised direction)")
    ax.set_ylabel("cross-entropy (eval mode)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if accs is not None:
        twin = ax.twinx()
        twin.plot(alphas, 100 * accs, color=color, lw=1.0, ls="--", alpha=0.7, label=f"{label} accuracy".strip())
        twin.set_ylabel("accuracy (%), dashed")
        twin.set_ylim(0, 100)


def draw_contour(ax: Any, alphas: np.ndarray, betas: np.ndarray, losses: np.ndarray, vmin: float,
                 vmax: float, levels: int = 20) -> Any:
    xx, yy = np.meshgrid(alphas, betas)
    z = np.ma.masked_invalid(np.minimum(losses, vmax))
    lv = np.linspace(vmin, vmax, levels + 1)
    filled = ax.contourf(xx, yy, z, levels=lv, cmap="viridis", vmin=vmin, vmax=vmax, extend="neither")
    ax.contour(xx, yy, z, levels=lv, colors="k", linewidths=0.4, alpha=0.5)
    ax.plot([0], [0], marker="*", color="red", ms=10)
    ax.set_xlabel("α (direction 1)")
    ax.set_ylabel("β (direction 2)")
    ax.set_aspect("equal")
    return filled


def refine(alphas: np.ndarray, betas: np.ndarray, losses: np.ndarray, points: int = 61
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear interpolation of the grid onto ``points`` x ``points``, for drawing only (the NPZ keeps the
    computed grid). A cell next to a non-finite loss stays NaN: a hole where nothing was measured."""
    fa = np.linspace(alphas[0], alphas[-1], max(points, len(alphas)))
    fb = np.linspace(betas[0], betas[-1], max(points, len(betas)))
    z = np.asarray(losses, dtype=np.float64)
    rows = np.array([np.interp(fa, alphas, r) for r in z])  # z[i, j]: beta i, alpha j
    return fa, fb, np.array([np.interp(fb, betas, c) for c in rows.T]).T


def draw_surface3d(ax: Any, alphas: np.ndarray, betas: np.ndarray, losses: np.ndarray, vmin: float,
                   vmax: float) -> Any:
    """The surface on a fine display grid, its filled contours projected on the floor.

    Why: mplot3d paints whole facets back to front (no depth buffer); on the coarse computed grid one facet of
    the near wall can be painted under the floor (the wall "missing", a stray facet on the floor), and a NaN
    that used to be drawn at vmax made a spike. Small facets sort correctly; NaN stays a hole."""
    fa, fb, z = refine(alphas, betas, np.where(np.isinf(losses), np.nan, losses))
    z = np.minimum(z, vmax)  # Li et al.'s clip: the rim above vmax is drawn flat at vmax
    xx, yy = np.meshgrid(fa, fb)
    floor = vmin - 0.35 * (vmax - vmin)
    ax.contourf(xx, yy, np.ma.masked_invalid(z), levels=np.linspace(vmin, vmax, 16), zdir="z", offset=floor,
                cmap="viridis", vmin=vmin, vmax=vmax, alpha=0.8)
    surf = ax.plot_surface(xx, yy, z, cmap="viridis", vmin=vmin, vmax=vmax, linewidth=0, antialiased=False,
                           rstride=1, cstride=1)
    from matplotlib.ticker import MaxNLocator

    ax.set_zlim(floor, vmax)
    ax.set_zticks([t for t in MaxNLocator(5).tick_values(vmin, vmax) if vmin <= t <= vmax])  # no loss < vmin
    ax.set_xlabel("α (direction 1)", labelpad=8)
    ax.set_ylabel("β (direction 2)", labelpad=8)
    ax.set_zlabel("loss")
    ax.view_init(elev=28, azim=-60)
    return surf


__all__ = [
    "base_state", "bn_stat_keys", "coordinates", "direction_cosine", "display_range", "draw_contour", "draw_line",
    "draw_surface3d", "evaluate_state", "filter_normalized_direction", "grid_stats", "interpolate",
    "interpolation_alphas", "interpolation_stats", "line_stats", "loss_grid", "loss_line", "merge_batches", "refine",
    "shifted",
    "weight_shapes",
]
