"""Optimizers, parameter groups, L1/L2 penalties and Lookahead, selected by ``optim.*`` config keys.

Three different things are called "weight decay" in the literature; cifarlab keeps them apart:

* ``optim.l2``: ``l2/2 * sum w^2`` is added to the LOSS; it reaches the update only through the gradient
  (``g + l2*w``), so adaptive optimizers (Adam, RMSprop, ...) rescale it like any gradient.
* ``optim.weight_decay``: torch's own argument. For sgd/adam/rmsprop/adagrad/adadelta/scratch_sgd/signum it is
  COUPLED: ``wd*w`` is added to the gradient inside the optimizer, the same update as ``optim.l2 = wd``
  (up to rounding; it is just not part of the logged loss). For adamw it is DECOUPLED (Loshchilov & Hutter):
  ``w -= lr*wd*w`` apart from the adaptive step.
* ``optim.l1``: ``l1 * sum |w|`` added to the loss (subgradient ``l1*sign(w)``).

``optim.no_decay_bn_bias`` puts the parameters with ndim <= 1 (BatchNorm/GroupNorm weights and biases, every bias)
in a group with weight_decay 0 and leaves them out of the L1/L2 penalties; ``optim.bn_bias_lr_mult`` scales the
LR of that same group (the LR schedule multiplies each group's own base LR).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cifarlab.config import OPTIMIZER_KEYS, OptimConfig
from cifarlab.engine.muon import MuonSGD, muon_groups
from cifarlab.engine.scratch_optim import ScratchSGD, Signum
from cifarlab.registry import Registry


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, bn_and_bias): trainable parameters with ndim > 1 (conv/linear kernels) and ndim <= 1.

    A model may list 1-D parameters that belong with the weights anyway (``weight_group_params()``): fast_net's
    whitening bias, which airbench trains at the weights' LR, not the 64x of the BN shifts.
    """
    listed = getattr(model, "weight_group_params", None)
    as_weights = {id(p) for p in listed()} if listed is not None else set()
    params = [p for p in model.parameters() if p.requires_grad]
    weights = [p for p in params if p.ndim > 1 or id(p) in as_weights]
    return weights, [p for p in params if p.ndim <= 1 and id(p) not in as_weights]


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """One group, or two ("weights", then "bn_bias") when no_decay_bn_bias or bn_bias_lr_mult asks for it.

    "weights" comes first so that ``param_groups[0]["lr"]`` (what steps.csv logs) is always ``optim.lr``'s curve.
    """
    weights, bn_bias = split_params(model)
    if not cfg.no_decay_bn_bias and cfg.bn_bias_lr_mult == 1.0 and cfg.bn_bias_wd_mult == 1.0:
        return [{"params": weights + bn_bias, "name": "all"}]
    groups = [
        {"params": weights, "name": "weights"},
        {"params": bn_bias, "name": "bn_bias", "lr": cfg.lr * cfg.bn_bias_lr_mult,
         "weight_decay": 0.0 if cfg.no_decay_bn_bias else cfg.weight_decay * cfg.bn_bias_wd_mult},
    ]
    return [g for g in groups if g["params"]]


OptimBuilder = Callable[[list[dict[str, Any]], OptimConfig], torch.optim.Optimizer]

# One entry per optimizer: ``build(groups, cfg)`` and the ``optim.*`` keys specific to it. Keys every optimizer
# uses (lr, weight_decay, grad_clip, l1/l2, groups, Lookahead) are not listed. config.OptimConfig.check refuses
# a listed key set away from its default while another optimizer is chosen.
OPTIMIZERS: Registry[OptimBuilder] = Registry("optimizer", config_key="optim.name", declared=OPTIMIZER_KEYS)


def list_optimizers() -> list[str]:
    return OPTIMIZERS.names()


def torch_style(cls: type[torch.optim.Optimizer], keys: tuple[str, ...], torch_eps: float = 1e-8) -> OptimBuilder:
    """A builder ``cls(groups, lr=, weight_decay=, **{key: cfg.key})``; a null eps becomes torch's own default."""

    def build(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
        kwargs = {k: getattr(cfg, k) for k in keys}
        if kwargs.get("eps", 0.0) is None:
            kwargs["eps"] = torch_eps
        return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)

    return build


# name, class, the optim.* keys passed to it (and declared), torch's eps default, description
for _name, _cls, _keys, _eps, _about in (
    ("sgd", torch.optim.SGD, ("momentum", "nesterov"), 1e-8, "torch.optim.SGD, (Nesterov) momentum"),
    ("adam", torch.optim.Adam, ("betas", "eps"), 1e-8, "torch.optim.Adam, coupled weight decay (= L2)"),
    ("adamw", torch.optim.AdamW, ("betas", "eps"), 1e-8, "torch.optim.AdamW, decoupled weight decay"),
    ("rmsprop", torch.optim.RMSprop, ("alpha", "eps"), 1e-8, "torch.optim.RMSprop, no momentum"),
    ("adagrad", torch.optim.Adagrad, ("eps",), 1e-10, "torch.optim.Adagrad"),
    ("adadelta", torch.optim.Adadelta, ("rho", "eps"), 1e-6, "torch.optim.Adadelta (lr usually 1.0)"),
    ("scratch_sgd", ScratchSGD, ("momentum", "nesterov"), 1e-8, "SGD written out by hand (engine/scratch_optim.py)"),
    ("signum", Signum, ("momentum",), 1e-8, "sign of the momentum (Bernstein et al. 2018)"),
):
    OPTIMIZERS.register(_name, _about, keys=_keys)(torch_style(_cls, _keys, _eps))


@OPTIMIZERS.register("muon", "Muon on conv filters + Nesterov SGD on head/BN shifts/biases (airbench94_muon; "
                     "engine/muon.py)", keys=("momentum", "nesterov", "muon_momentum", "muon_ns_steps", "head_lr_mult"))
def _muon(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for g in groups for p in g["params"]]
    regrouped = muon_groups(params, cfg.lr, cfg.bn_bias_lr_mult, cfg.head_lr_mult, cfg.weight_decay)
    return MuonSGD(regrouped, cfg.lr, cfg.momentum, cfg.nesterov, cfg.muon_momentum, cfg.muon_ns_steps)


class Lookahead:
    """Lookahead (Zhang et al., 2019) around any optimizer: k fast steps, then ``slow += alpha*(fast - slow)``
    and the fast weights restart from the new slow weights. The inner optimizer's state is kept across syncs.

    Duck-types the optimizer interface the trainer, LR schedule and GradScaler use (``param_groups``, ``step``,
    ``zero_grad``, ``state_dict``); ``param_groups`` is the inner optimizer's list, read through a property
    because ``load_state_dict`` replaces that list.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int, alpha: float, ramp_steps: int = 0) -> None:
        if k < 1 or not 0 < alpha <= 1:
            raise ValueError(f"Lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        self.optimizer, self.k, self.alpha = optimizer, k, alpha
        self.ramp_steps = ramp_steps  # > 0: alpha ramps from 1 to ``alpha`` over these steps (alpha_at)
        self.steps = 0  # fast steps taken; a Python int, so deciding when to sync never touches the device
        self.slow = [p.detach().clone() for p in self._params()]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self.optimizer.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            fast = self._params()
            # slow + alpha*(fast - slow), one fused kernel
            torch._foreach_lerp_(self.slow, fast, self.alpha_at(self.steps))
            torch._foreach_copy_(fast, self.slow)
        return loss

    def alpha_at(self, step: int) -> float:
        """The sync's alpha: constant, or with a ramp 1 - (1 - alpha) (step / ramp_steps)^3 (airbench94)."""
        if self.ramp_steps <= 0:
            return self.alpha
        return 1.0 - (1.0 - self.alpha) * min(1.0, step / self.ramp_steps) ** 3

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "lookahead_steps": self.steps,
                "lookahead_slow": [s.clone() for s in self.slow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["lookahead_steps"])
        for s, saved in zip(self.slow, state["lookahead_slow"]):
            s.copy_(saved)


Optimizer = torch.optim.Optimizer | Lookahead


def build_optimizer(model: nn.Module, cfg: OptimConfig, total_steps: int = 0) -> Optimizer:
    """The optimizer of ``optim.name`` over ``param_groups(model, cfg)``, wrapped in Lookahead if lookahead_k > 0
    (its alpha ramped over ``total_steps`` when ``lookahead_ramp``)."""
    opt = OPTIMIZERS.get(cfg.name)(param_groups(model, cfg), cfg)
    if cfg.lookahead_k <= 0:
        return opt
    return Lookahead(opt, cfg.lookahead_k, cfg.lookahead_alpha, total_steps if cfg.lookahead_ramp else 0)


def build_regularizer(model: nn.Module, cfg: OptimConfig) -> Callable[[], torch.Tensor] | None:
    """``penalty() -> l1*sum|w| + l2/2*sum w^2`` over the penalised parameters, or None when l1 = l2 = 0.

    Penalised: every trainable parameter, or only those with ndim > 1 when no_decay_bn_bias. The penalty is a
    graph of a few reductions added to the loss; nothing is read back to the host.
    """
    if cfg.l1 == 0 and cfg.l2 == 0:
        return None
    weights, bn_bias = split_params(model)
    params = weights if cfg.no_decay_bn_bias else weights + bn_bias
    l1, l2 = cfg.l1, cfg.l2

    def penalty() -> torch.Tensor:
        total = torch.zeros((), device=params[0].device)
        if l1:
            total = total + l1 * torch.stack([p.abs().sum() for p in params]).sum()
        if l2:
            total = total + (l2 / 2) * torch.stack([p.pow(2).sum() for p in params]).sum()
        return total

    return penalty
