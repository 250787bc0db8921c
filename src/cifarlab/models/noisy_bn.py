"""Noisy BatchNorm, Santurkar et al. (2018) Algorithm 1: BN followed by a random, time-varying shift/scale.

Per training step and unit (channel) c:   mu_c ~ U(-n_mu, n_mu),  sigma_c ~ U(1, n_sigma)
Per sample j of unit c:                    m_j ~ U(mu_c - r_mu, mu_c + r_mu),  s_j ~ N(sigma_c, r_sigma)
                                           a_j <- s_j * a_j + m_j

"Conv spatial positions count as batch": for a conv activation (B, C, H, W), the samples of unit c are its
B*H*W values, exactly the set BN normalises over; so m and s are drawn independently per (b, h, w) -- each
position gets its own noise, around the per-step (mu_c, sigma_c). r_sigma is the standard deviation of s.
In eval mode the wrapper adds no noise: it is the plain BN (the noise models a training-time distribution
shift, the network is judged without it). Registered as the model ``vgg_a_noisy_bn``; the noise generators'
states travel in the model's state_dict (``get_extra_state``), so a resumed run draws the same noise.

``noise_enabled`` (per module) / ``noise_disabled(model)`` switch the noise off in training mode without drawing
from (or touching) the generators: batch-statistics evaluation and clean BN-statistics passes need BN's training
behaviour without the injected shift.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cifarlab.models.registry import create, register


@dataclass
class NoiseDraw:
    """The per-step draws of the last forward (for tests and plots)."""

    mu: Tensor  # (C,)
    sigma: Tensor  # (C,)


def add_bn_noise(a: Tensor, generator: torch.Generator, n_mu: float = 0.5, n_sigma: float = 1.25,
                 r_mu: float = 0.1, r_sigma: float = 0.1) -> tuple[Tensor, NoiseDraw]:
    """Algorithm 1 on a (B, C, ...) activation; returns the noisy activation and the per-step (mu, sigma)."""
    c = a.shape[1]
    dev, dt = a.device, a.dtype
    mu = (torch.rand(c, generator=generator, device=dev, dtype=dt) * 2 - 1) * n_mu
    sigma = 1 + torch.rand(c, generator=generator, device=dev, dtype=dt) * (n_sigma - 1)
    shape = (1, c) + (1,) * (a.dim() - 2)
    m = mu.view(shape) + (torch.rand(a.shape, generator=generator, device=dev, dtype=dt) * 2 - 1) * r_mu
    s = sigma.view(shape) + torch.randn(a.shape, generator=generator, device=dev, dtype=dt) * r_sigma
    return s * a + m, NoiseDraw(mu=mu, sigma=sigma)


class NoisyBatchNorm(nn.Module):
    """A BatchNorm module followed by Algorithm 1's noise in training mode; exactly the BN in eval mode.

    The noise has its own generator (seeded), so it does not shift the global RNG stream: the data order and
    everything else stay as in the BN run, only the injected shift differs.
    """

    def __init__(self, bn: nn.Module, n_mu: float = 0.5, n_sigma: float = 1.25, r_mu: float = 0.1,
                 r_sigma: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if n_mu < 0 or n_sigma < 1 or r_mu < 0 or r_sigma < 0:
            raise ValueError(f"noisy BN needs n_mu >= 0, n_sigma >= 1, r_mu, r_sigma >= 0; got "
                             f"{n_mu}, {n_sigma}, {r_mu}, {r_sigma}")
        self.bn = bn
        self.n_mu, self.n_sigma, self.r_mu, self.r_sigma = n_mu, n_sigma, r_mu, r_sigma
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self.last: NoiseDraw | None = None
        self.noise_enabled = True  # False: exactly the BN in training mode too (no draw from the generator)

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def forward(self, x: Tensor) -> Tensor:
        a = self.bn(x)
        if not (self.training and self.noise_enabled):
            return a
        out, self.last = add_bn_noise(a, self._generator(a.device), self.n_mu, self.n_sigma, self.r_mu,
                                      self.r_sigma)
        return out

    def extra_repr(self) -> str:
        return f"n_mu={self.n_mu}, n_sigma={self.n_sigma}, r_mu={self.r_mu}, r_sigma={self.r_sigma}"

    def get_extra_state(self) -> dict[str, Any]:
        # In the state_dict, so checkpoints carry where the noise streams are (tensors only: weights_only loads).
        return {str(dev): g.get_state() for dev, g in self._generators.items()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for dev, rng in state.items():
            self._generator(torch.device(dev)).set_state(rng)


@contextlib.contextmanager
def noise_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Noise off in every ``NoisyBatchNorm`` of ``model`` inside the block; each module's previous setting is
    restored on exit (also on error). A model without noisy BN passes through unchanged."""
    noisy = [m for m in model.modules() if isinstance(m, NoisyBatchNorm)]
    before = [m.noise_enabled for m in noisy]
    for m in noisy:
        m.noise_enabled = False
    try:
        yield model
    finally:
        for m, enabled in zip(noisy, before):
            m.noise_enabled = enabled


def make_noisy_bn(model: nn.Module, seed: int = 0, **noise: float) -> nn.Module:
    """Wrap every BatchNorm2d of ``model`` in place (parameters and their names' order are kept: ``bn.``)."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                # A different seed per layer: identical noise in every layer would be a correlated shift.
                setattr(parent, name, NoisyBatchNorm(child, seed=seed * 1000 + count, **noise))
                count += 1
    if count == 0:
        raise ValueError("make_noisy_bn: the model has no BatchNorm2d to wrap")
    return model


@register("vgg_a_noisy_bn", "course VGG-A + BN with Algorithm 1's noise after every BN (Santurkar et al.) (9.76M)")
def vgg_a_noisy_bn(num_classes: int = 10, width_mult: float = 1.0, n_mu: float = 0.5, n_sigma: float = 1.25,
                   r_mu: float = 0.1, r_sigma: float = 0.1, noise_seed: int = 0) -> nn.Module:
    return make_noisy_bn(create("vgg_a_bn", num_classes=num_classes, width_mult=width_mult), seed=noise_seed,
                         n_mu=n_mu, n_sigma=n_sigma, r_mu=r_mu, r_sigma=r_sigma)


__all__ = ["NoiseDraw", "NoisyBatchNorm", "add_bn_noise", "make_noisy_bn", "noise_disabled", "vgg_a_noisy_bn"]
