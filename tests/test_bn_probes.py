"""Probe math of the bn-study (Santurkar et al. Fig. 4, Definition 2.1, Algorithm 1), checked against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.analysis.bn_study.ics import ics_measure, layer_groups, snapshot_params
from cifarlab.analysis.bn_study.probes import eta_grid, loss_band, named_trainable, probe_step
from cifarlab.models.noisy_bn import NoisyBatchNorm, add_bn_noise, make_noisy_bn


class Quadratic(nn.Module):
    """L(w) = 1/2 w^T A w with a fixed SPD A; the "batch" is ignored (forward returns the loss itself)."""

    def __init__(self, a: torch.Tensor, w0: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.w = nn.Parameter(w0.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w


def as_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out


@pytest.fixture
def quad() -> tuple[Quadratic, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))[0]
    eig = torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0, 9.0], dtype=torch.float64)
    a = q @ torch.diag(eig) @ q.T
    return Quadratic(a, torch.randn(6, generator=gen, dtype=torch.float64)), eig


def test_eta_grid_spans_half_to_four_times_lr() -> None:
    grid = eta_grid(0.1, 8)
    assert grid[0] == pytest.approx(0.05) and grid[-1] == pytest.approx(0.4) and len(grid) == 8
    assert np.all(np.diff(grid) > 0)


def test_log_grid_endpoints_and_ratio_exact() -> None:
    grid = eta_grid(0.1, 7, 1e-3, 4.0, spacing="log")
    assert len(grid) == 7 and grid[0] == 1e-3 * 0.1 and grid[-1] == 4.0 * 0.1
    ratios = np.array(grid[1:]) / np.array(grid[:-1])
    assert ratios == pytest.approx(np.full(6, 4000 ** (1 / 6)), rel=1e-12)
    assert eta_grid(0.1, 8) == eta_grid(0.1, 8, spacing="linear")  # the paper's grid is still the default
    assert eta_grid(0.2, 1, 0.01, 1.0, spacing="log") == [0.01 * 0.2]
    with pytest.raises(ValueError, match="spacing"):
        eta_grid(0.1, 3, spacing="geometric")
    with pytest.raises(ValueError, match="low > 0"):
        eta_grid(0.1, 3, 0.0, 1.0, spacing="log")


def test_loss_slopes_and_rel_diffs_closed_form_on_quadratic(quad: tuple[Quadratic, torch.Tensor]) -> None:
    model, _ = quad
    a, w = model.a, model.w.detach()
    etas = eta_grid(0.1, 6, 1e-3, 4.0, spacing="log")
    r = probe_step(model, torch.zeros(1), torch.zeros(1), as_loss, etas)
    g = a @ w
    gg, gag, g_norm = float(g @ g), float(g @ a @ g), float(g.norm())
    # L(w - eta g) - L(w) = -eta ||g||^2 + eta^2/2 g^T A g  ->  slope -||g|| + eta g^T A g / (2 ||g||)
    assert r.loss_slopes == pytest.approx([-g_norm + e * gag / (2 * g_norm) for e in etas], rel=1e-9)
    assert r.loss_slopes[0] == pytest.approx(-math.sqrt(gg), rel=1e-3)  # the eta -> 0 limit: -||g||
    assert r.rel_diffs == pytest.approx([e * float((a @ g).norm()) / g_norm for e in etas], rel=1e-10)


class Quartic(nn.Module):
    """L(w) = w^2/2 - c w^4/4 in 1-D. (On a quadratic beta is the same at every eta, ||Ag|| / ||g||: no max.)

    From w = 1 the gradient is g = 1 - c and beta(eta) = |mean of L'' over [a, 1]| = 1 - c (1 + a + a^2) with
    a = 1 - eta g: largest at a = -1/2, i.e. eta* = 1.5 / g.
    """

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c
        self.w = nn.Parameter(torch.ones(1, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.w**2 - self.c * self.w**4 / 4).sum()


@pytest.mark.parametrize(("low", "high", "argmax", "edge"), [
    (0.1, 4.0, None, False),  # the grid brackets eta*: interior max
    (0.1, 1.0, -1, True),  # all below eta*: beta still rising at the last point
    (2.5, 4.0, 0, True),  # all above eta*: beta falling from the first point
])
def test_beta_at_edge_on_quartic(low: float, high: float, argmax: int | None, edge: bool) -> None:
    c = 0.1
    model, g = Quartic(c), 1 - c
    etas = eta_grid(1.0, 40, low, high)
    r = probe_step(model, torch.zeros(1), torch.zeros(1), as_loss, etas)
    expected = [1 - c * (1 + a + a * a) for a in (1 - e * g for e in etas)]
    assert r.betas == pytest.approx(expected, rel=1e-9)
    assert r.beta_at_edge is edge
    if argmax is None:
        assert etas[r.beta_argmax] == pytest.approx(1.5 / g, abs=etas[1] - etas[0])
    else:
        assert r.beta_argmax == argmax % len(etas)


def test_quadratic_closed_forms(quad: tuple[Quadratic, torch.Tensor]) -> None:
    model, eig = quad
    a, w = model.a, model.w.detach()
    etas = eta_grid(0.1, 7)
    r = probe_step(model, torch.zeros(1), torch.zeros(1), as_loss, etas)
    g = a @ w
    ag_norm, g_norm = float((a @ g).norm()), float(g.norm())
    assert r.grad_norm == pytest.approx(g_norm, rel=1e-12)
    # grad L(w - eta g) - g = -eta A g  ->  predictiveness eta ||Ag||, beta = ||Ag|| / ||g|| <= lambda_max
    for eta, diff, beta in zip(etas, r.grad_diffs, r.betas):
        assert diff == pytest.approx(eta * ag_norm, rel=1e-10)
        assert beta == pytest.approx(ag_norm / g_norm, rel=1e-10)
    assert r.beta <= float(eig.max()) + 1e-12
    # Landscape band = brute force over the grid.
    brute = [float(0.5 * (w - e * g) @ a @ (w - e * g)) for e in etas]
    assert r.losses == pytest.approx(brute, rel=1e-12)
    assert (r.loss_min, r.loss_max) == (pytest.approx(min(brute)), pytest.approx(max(brute)))
    assert r.loss == pytest.approx(float(0.5 * w @ a @ w))


def test_quadratic_beta_reaches_lambda_max_along_top_eigenvector(quad: tuple[Quadratic, torch.Tensor]) -> None:
    model, _ = quad
    evals, evecs = torch.linalg.eigh(model.a)
    with torch.no_grad():
        model.w.copy_(evecs[:, -1])
    r = probe_step(model, torch.zeros(1), torch.zeros(1), as_loss, eta_grid(0.1, 3))
    assert r.beta == pytest.approx(float(evals[-1]), rel=1e-10)


def tiny_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _state(model: nn.Module, opt: torch.optim.Optimizer) -> tuple:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    ost = {k: {kk: vv.clone() if torch.is_tensor(vv) else vv for kk, vv in v.items()}
           for k, v in opt.state_dict()["state"].items()}
    return sd, grads, ost, torch.get_rng_state().clone()


def test_probe_leaves_weights_bn_stats_optimizer_and_rng_bit_identical() -> None:
    model = tiny_bn_net().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 3, (8,))
    for _ in range(2):  # momentum buffers and running statistics exist and are non-trivial
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    before = _state(model, opt)
    probe_step(model, x, y, F.cross_entropy, eta_grid(0.1, 4))
    grads = {n: p.grad for n, p in named_trainable(model).items()}
    probe_step(model, x, y, F.cross_entropy, eta_grid(0.1, 4), grads=grads)
    after = _state(model, opt)
    for b, a in zip(before[:3], after[:3]):
        assert b.keys() == a.keys()
        for k in b:
            if isinstance(b[k], dict):
                assert all(torch.equal(b[k][kk], a[k][kk]) for kk in b[k] if torch.is_tensor(b[k][kk]))
            else:
                assert torch.equal(b[k], a[k]), k
    assert torch.equal(before[3], after[3])
    assert model.training


def test_probe_given_grads_equals_probe_computing_them() -> None:
    model = tiny_bn_net().train()
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 3, (8,))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    r1 = probe_step(model, x, y, F.cross_entropy, eta_grid(0.1, 3))
    grads = {n: p.grad for n, p in named_trainable(model).items()}
    r2 = probe_step(model, x, y, F.cross_entropy, eta_grid(0.1, 3), grads=grads, loss=float(loss.detach()))
    assert r1.losses == pytest.approx(r2.losses, rel=1e-5)
    assert r1.betas == pytest.approx(r2.betas, rel=1e-4)


def _train(model: nn.Module, steps: int, probe: bool) -> dict[str, torch.Tensor]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 3, 6, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if probe:
            grads = {n: p.grad for n, p in named_trainable(model).items()}
            probe_step(model, x, y, F.cross_entropy, eta_grid(0.1, 3), grads=grads)
            before = snapshot_params(model)
        opt.step()
        if probe:
            ics_measure(model, x, y, F.cross_entropy, before, snapshot_params(model), [2, 3])
        torch.rand(1)  # a global draw after the probes: it must be the same draw in both runs
    state = {k: v.clone() if isinstance(v, torch.Tensor) else {d: t.clone() for d, t in v.items()}
             for k, v in model.state_dict().items()}
    return state | {"rng": torch.get_rng_state()}


@pytest.mark.parametrize("noisy", [False, True])
def test_trajectory_identical_with_and_without_probes(noisy: bool) -> None:
    # Noisy BN draws from private generators during the probes' forward passes: they must be restored too.
    def build() -> nn.Module:
        return make_noisy_bn(tiny_bn_net(), seed=0) if noisy else tiny_bn_net()

    torch.manual_seed(3)
    plain = _train(build(), 5, probe=False)
    torch.manual_seed(3)
    probed = _train(build(), 5, probe=True)
    assert plain.keys() == probed.keys()
    for k in plain:
        a, b = plain[k], probed[k]
        if isinstance(a, dict):  # noisy BN's extra state: its noise generators' states, equal too
            assert a.keys() == b.keys() and all(torch.equal(a[d], b[d]) for d in a), k
        else:
            assert torch.equal(a, b), k


def test_loss_band_is_min_max_over_runs_truncated_to_shortest() -> None:
    runs = [[3.0, 2.0, 1.0, 0.5], [2.5, 2.5, 0.8], [4.0, 1.0, 1.2, 0.1, 0.0]]
    lo, hi = loss_band(runs)
    assert lo.tolist() == [2.5, 1.0, 0.8] and hi.tolist() == [4.0, 2.5, 1.2]
    with pytest.raises(ValueError):
        loss_band([])


def test_ics_equals_manual_computation_on_two_layer_net() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    groups = layer_groups(net)
    assert [g.weight for g in groups] == ["0.weight", "2.weight"]
    assert groups[0].params == ["0.weight", "0.bias"]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    w1, b1, w2, b2 = (p.detach().clone() for p in net.parameters())
    before = snapshot_params(net)
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()
    after = snapshot_params(net)
    (res,) = ics_measure(net, x, y, F.cross_entropy, before, after, [2])

    # By hand: G = dL/dW2 at (W1, W2); G' = dL/dW2 with layer 1 at its step-t+1 values, layer 2 still at W2.
    def grad_w2(w1_: torch.Tensor, b1_: torch.Tensor) -> torch.Tensor:
        v = w2.clone().requires_grad_(True)
        loss = F.cross_entropy(F.linear(torch.tanh(F.linear(x, w1_, b1_)), v, b2), y)
        return torch.autograd.grad(loss, v)[0]

    g = grad_w2(w1, b1)
    g2 = grad_w2(after["0.weight"], after["0.bias"])
    assert res.l2 == pytest.approx(float((g - g2).norm()), rel=1e-5)
    assert res.cos == pytest.approx(float(F.cosine_similarity(g.flatten(), g2.flatten(), dim=0)), rel=1e-5)
    assert res.grad_norm == pytest.approx(float(g.norm()), rel=1e-5)
    # Layer 2's own weights did not move in G'; nor did the model (it holds w_{t+1} untouched).
    assert torch.equal(net[0].weight, after["0.weight"])


def test_noisy_bn_noise_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    n_mu, n_sigma, r_mu, r_sigma = 0.5, 1.25, 0.1, 0.1
    zeros, ones = torch.zeros(64, 3, 16, 16), torch.ones(64, 3, 16, 16)
    mus, sigmas = [], []
    for _ in range(200):
        out, draw = add_bn_noise(zeros, gen, n_mu, n_sigma, r_mu, r_sigma)
        mus.append(draw.mu)
        sigmas.append(draw.sigma)
    # Within one step, a = 0 gives m: per channel U(mu_c - r_mu, mu_c + r_mu) over all (b, h, w) positions.
    m = out.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(m.mean(1), draw.mu, atol=0.005)
    assert torch.allclose(m.var(1), torch.full((3,), r_mu**2 / 3), rtol=0.05)
    assert bool(((m - draw.mu[:, None]).abs() <= r_mu + 1e-6).all())
    # Noise varies over spatial positions ("spatial positions count as batch"), not only over samples.
    assert float(out[0, 0].std()) > 0
    # a = 1 gives s + m: mean sigma_c + mu_c, variance r_sigma^2 + r_mu^2 / 3.
    out1, d1 = add_bn_noise(ones, gen, n_mu, n_sigma, r_mu, r_sigma)
    v = out1.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(v.mean(1), d1.mu + d1.sigma, atol=0.006)
    assert torch.allclose(v.var(1), torch.full((3,), r_sigma**2 + r_mu**2 / 3), rtol=0.05)
    # Per-step draws: mu ~ U(-n_mu, n_mu), sigma ~ U(1, n_sigma).
    mu, sigma = torch.cat(mus), torch.cat(sigmas)
    assert float(mu.abs().max()) <= n_mu and float(mu.mean()) == pytest.approx(0, abs=0.05)
    assert float(mu.var()) == pytest.approx(n_mu**2 / 3, rel=0.15)
    assert float(sigma.min()) >= 1 and float(sigma.max()) <= n_sigma
    assert float(sigma.mean()) == pytest.approx((1 + n_sigma) / 2, abs=0.02)
    assert float(sigma.var()) == pytest.approx((n_sigma - 1) ** 2 / 12, rel=0.15)


def test_noisy_bn_eval_is_plain_bn_and_wrapping_keeps_parameters() -> None:
    from cifarlab.models import create

    torch.manual_seed(0)
    bn_model = create("vgg_a_bn", width_mult=1 / 16)
    torch.manual_seed(0)  # same initial weights: wrapping must not change them
    noisy = make_noisy_bn(create("vgg_a_bn", width_mult=1 / 16), seed=0)
    wrapped = [m for m in noisy.modules() if isinstance(m, NoisyBatchNorm)]
    assert len(wrapped) == 8
    assert sum(p.numel() for p in noisy.parameters()) == sum(p.numel() for p in bn_model.parameters())
    x = torch.randn(4, 3, 32, 32)
    bn_model.eval()
    noisy.eval()
    assert torch.equal(noisy(x), bn_model(x))  # eval: no noise at all, exactly the BN network
    noisy.train()
    bn_model.train()
    assert not torch.allclose(noisy(x), bn_model(x))  # training: noise is injected
    with pytest.raises(ValueError):
        make_noisy_bn(nn.Sequential(nn.Linear(2, 2)))
