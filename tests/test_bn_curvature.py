"""Curvature probes (Hessian-vector products, power iteration, Hutchinson, SLQ) against known spectra."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.analysis.bn_study.curvature import (
    eigen_density,
    gradient_curvature,
    hessian_operator,
    hutchinson_trace,
    hvp,
    measure_curvature,
    smoothed_density,
    top_eigenvalue,
)
from cifarlab.analysis.bn_study.probes import loss_and_grads, named_trainable
from cifarlab.models.noisy_bn import make_noisy_bn
from test_bn_probes import Quadratic, as_loss

X0, Y0 = torch.zeros(1), torch.zeros(1)


@pytest.fixture(autouse=True)
def _one_thread():
    # Hundreds of tiny double backwards: intra-op threads only add sync cost (25x slower on a busy 2-core box).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def quadratic(eig: list[float], seed: int = 0) -> Quadratic:
    gen = torch.Generator().manual_seed(seed)
    n = len(eig)
    q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    a = q @ torch.diag(torch.tensor(eig, dtype=torch.float64)) @ q.T
    return Quadratic(0.5 * (a + a.T), torch.randn(n, generator=gen, dtype=torch.float64))


EIG = [0.1, 0.5, 1.0, 2.0, 5.0, 9.0]


def test_hvp_is_a_times_v_on_quadratic() -> None:
    model = quadratic(EIG)
    v = torch.randn(6, dtype=torch.float64)
    params = {n: p.detach() for n, p in model.named_parameters()}
    out = hvp(model, params, X0, Y0, as_loss, {"w": v})
    assert torch.allclose(out["w"], model.a @ v, rtol=1e-12, atol=1e-12)


def test_top_eigenvalue_is_lambda_max_and_reproducible() -> None:
    op = hessian_operator(quadratic(EIG), X0, Y0, as_loss)
    r = top_eigenvalue(op, max_iters=1000, tol=1e-12, generator=torch.Generator().manual_seed(1))
    assert r.converged and r.iterations < 1000
    assert r.value == pytest.approx(9.0, rel=1e-6)
    again = top_eigenvalue(op, max_iters=1000, tol=1e-12, generator=torch.Generator().manual_seed(1))
    assert again == r
    capped = top_eigenvalue(op, max_iters=2, tol=1e-12)
    assert not capped.converged and capped.iterations == 2


def test_top_eigenvalue_is_algebraic_max_when_a_negative_eigenvalue_dominates() -> None:
    op = hessian_operator(quadratic([-20.0, -1.0, 0.5, 1.0, 3.0]), X0, Y0, as_loss)
    r = top_eigenvalue(op, max_iters=3000, tol=1e-13)
    assert r.converged
    assert r.value == pytest.approx(3.0, rel=1e-6)


def test_gradient_curvature_closed_forms() -> None:
    model = quadratic(EIG)
    a, w = model.a, model.w.detach()
    g = a @ w
    ghg, hg = gradient_curvature(hessian_operator(model, X0, Y0, as_loss))
    assert ghg == pytest.approx(float(g @ a @ g / (g @ g)), rel=1e-12)
    assert hg == pytest.approx(float((a @ g).norm() / g.norm()), rel=1e-12)
    with torch.no_grad():
        model.w.zero_()  # stationary point: no direction, report 0 like probes.probe_step
    assert gradient_curvature(hessian_operator(model, X0, Y0, as_loss)) == (0.0, 0.0)


def test_hutchinson_trace_within_its_standard_error() -> None:
    op = hessian_operator(quadratic(EIG), X0, Y0, as_loss)
    mean, se = hutchinson_trace(op, probes=2000, generator=torch.Generator().manual_seed(2))
    assert se > 0
    assert abs(mean - sum(EIG)) <= 4 * se
    with pytest.raises(ValueError):
        hutchinson_trace(op, probes=1)


def test_hutchinson_trace_exact_for_diagonal_hessian() -> None:
    # z^T D z = sum_i D_ii z_i^2 = tr D for every Rademacher z: zero variance.
    d = torch.tensor([0.3, -1.0, 2.5, 7.0], dtype=torch.float64)
    op = hessian_operator(Quadratic(torch.diag(d), torch.ones(4, dtype=torch.float64)), X0, Y0, as_loss)
    mean, se = hutchinson_trace(op, probes=5)
    assert mean == pytest.approx(float(d.sum()), rel=1e-14) and se == pytest.approx(0.0, abs=1e-14)


def test_slq_nodes_cover_spectrum_and_weights_sum_to_one() -> None:
    eig = list(np.linspace(-2.0, 10.0, 20))
    op = hessian_operator(quadratic(eig), X0, Y0, as_loss)
    dens = eigen_density(op, steps=12, starts=4, seed=0)
    assert dens.weights.sum() == pytest.approx(1.0, abs=1e-12) and np.all(dens.weights >= 0)
    assert np.all(dens.nodes >= -2.0 - 1e-8) and np.all(dens.nodes <= 10.0 + 1e-8)
    # Extreme Ritz values converge first: 12 steps pin the ends of the spectrum.
    assert dens.nodes.min() == pytest.approx(-2.0, abs=1e-2) and dens.nodes.max() == pytest.approx(10.0, abs=1e-2)
    assert dens.steps == [12] * 4
    full = eigen_density(op, steps=20, starts=1)
    assert np.sort(full.nodes) == pytest.approx(np.asarray(eig), abs=1e-8)


def test_slq_density_concentrates_at_few_distinct_eigenvalues() -> None:
    distinct = [1.0, 3.0, 7.0]
    op = hessian_operator(quadratic([e for e in distinct for _ in range(4)]), X0, Y0, as_loss)
    dens = eigen_density(op, steps=10, starts=200, seed=3)
    assert max(dens.steps) == 3  # Krylov space of dimension 3: Lanczos breaks down, quadrature is exact
    assert np.all(np.min(np.abs(dens.nodes[:, None] - np.asarray(distinct)), axis=1) < 1e-8)
    for lam in distinct:  # E[weight] = multiplicity / n = 1/3 (Beta(2, 4) per start, sd 0.013 over 200)
        assert dens.weights[np.abs(dens.nodes - lam) < 1e-6].sum() == pytest.approx(1 / 3, abs=0.06)
    sigma = 0.05
    grid, phi = smoothed_density(dens, sigma=sigma, grid=np.linspace(-1.0, 9.0, 4001))
    assert _integrate(phi, grid) == pytest.approx(1.0, abs=1e-6)
    near = np.min(np.abs(grid[:, None] - np.asarray(distinct)), axis=1) < 3 * sigma
    assert _integrate(np.where(near, phi, 0.0), grid) > 0.99


def _integrate(f: np.ndarray, x: np.ndarray) -> float:
    # Trapezoid rule by hand: np.trapezoid is numpy >= 2 only, np.trapz is gone in numpy 2.
    return float(np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(x)))


def tiny_bn_net(dropout: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
              nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers, *([nn.Dropout(0.2)] if dropout else []), nn.Linear(4, 3))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    # Parameters and buffers (running stats, count); noisy BN's extra state is its generators', compared below.
    state = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    state |= {f"grad:{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    private = [g.get_state() for m in model.modules() for g in getattr(m, "_generators", {}).values()]
    return state | {"rng": torch.get_rng_state()} | {f"gen{i}": s for i, s in enumerate(private)}


@pytest.mark.parametrize("noisy", [False, True])
def test_measure_curvature_leaves_model_grads_and_rng_bit_identical(noisy: bool) -> None:
    model = tiny_bn_net(dropout=True)
    model = make_noisy_bn(model, seed=0) if noisy else model
    model.train()
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 3, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # non-trivial running statistics and num_batches_tracked
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    F.cross_entropy(model(x), y).backward()  # a .grad that must survive
    before = _snapshot(model)
    r = measure_curvature(model, x, y, F.cross_entropy, power_iters=5, trace_probes=3, seed=0)
    eigen_density(hessian_operator(model, x, y, F.cross_entropy), steps=4, starts=2)
    after = _snapshot(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert model.training
    assert np.isfinite([r.lambda_max, r.gHg_over_gg, r.Hg_over_g, r.trace, r.trace_se, r.loss]).all()
    assert r.lambda_iterations <= 5


def test_hvp_matches_finite_differences_on_bn_net_in_train_mode() -> None:
    model = tiny_bn_net().double().train()
    x, y = torch.randn(8, 3, 6, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    params = {n: p.detach().clone() for n, p in named_trainable(model).items()}
    gen = torch.Generator().manual_seed(4)
    v = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}
    hv = hvp(model, params, x, y, F.cross_entropy, v)
    eps = 1e-5
    _, g_plus = loss_and_grads(model, {n: params[n] + eps * v[n] for n in params}, x, y, F.cross_entropy)
    _, g_minus = loss_and_grads(model, {n: params[n] - eps * v[n] for n in params}, x, y, F.cross_entropy)
    fd = torch.cat([((g_plus[n] - g_minus[n]) / (2 * eps)).reshape(-1) for n in params])
    exact = torch.cat([hv[n].reshape(-1) for n in params])
    assert float((exact - fd).norm() / exact.norm()) < 1e-3


def test_operator_agrees_with_dense_hessian_on_bn_net() -> None:
    model = tiny_bn_net().double().train()
    x, y = torch.randn(8, 3, 6, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    op = hessian_operator(model, x, y, F.cross_entropy)
    dense = torch.stack([op.matvec(e) for e in torch.eye(op.dim, dtype=torch.float64)])
    assert torch.allclose(dense, dense.T, atol=1e-10)
    evals = torch.linalg.eigvalsh(0.5 * (dense + dense.T))
    dens = eigen_density(op, steps=60, starts=1)
    assert dens.nodes.max() == pytest.approx(float(evals.max()), rel=1e-6)
    assert dens.nodes.min() == pytest.approx(float(evals.min()), rel=1e-3)
    r = measure_curvature(model, x, y, F.cross_entropy, power_iters=2000, power_tol=1e-12, trace_probes=2)
    assert r.lambda_max == pytest.approx(float(evals.max()), rel=1e-4)
    assert r.gHg_over_gg <= float(evals.max()) + 1e-9
    assert r.Hg_over_g <= float(evals.abs().max()) + 1e-9
