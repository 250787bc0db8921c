"""Weight averaging: an exponential moving average (EMA) and stochastic weight averaging (SWA).

Both keep a full copy of the model (``.module``) whose weights are the average, so it can be evaluated,
checkpointed and loaded like the model itself. Updates are fused ``torch._foreach_*`` kernels over all tensors:
one or two kernel launches per update, no host-device sync.

* ``EMA(decay)``, updated after every optimizer step, over parameters AND floating-point buffers (BatchNorm
  running mean/var; integer buffers such as ``num_batches_tracked`` are copied)::

      ema_0 = w_0,   ema_k = decay * ema_{k-1} + (1 - decay) * w_k
            = decay^k w_0 + (1 - decay) * sum_{i=1..k} decay^(k-i) w_i

* ``SWA``, updated at the end of each epoch from ``train.swa_start_epoch`` on: the plain mean of the n weight
  snapshots, kept as a running mean ``avg += (w - avg) / n``. Its BatchNorm statistics are NOT averages of the
  snapshots' statistics (those belong to other weights); ``update_bn`` recomputes them with a pass over the
  training images before the SWA model is evaluated (Izmailov et al., 2018).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def _float_and_other_tensors(module: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(floating tensors: parameters + float buffers, other buffers), in the state_dict order."""
    tensors = [p.data for p in module.parameters()] + list(module.buffers())
    return [t for t in tensors if t.is_floating_point()], [t for t in tensors if not t.is_floating_point()]


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()  # starts at w_0; keeps the model's device and memory format
        self.module.requires_grad_(False)
        self._avg_float, self._avg_other = _float_and_other_tensors(self.module)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        cur_float, cur_other = _float_and_other_tensors(model)
        torch._foreach_lerp_(self._avg_float, cur_float, 1 - self.decay)  # avg + (1-d)(w - avg)
        if self._avg_other:
            torch._foreach_copy_(self._avg_other, cur_other)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)


class SWA:
    def __init__(self, model: nn.Module) -> None:
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.n_averaged = 0
        self._avg_float, self._avg_other = _float_and_other_tensors(self.module)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        cur_float, cur_other = _float_and_other_tensors(model)
        self.n_averaged += 1
        # Running mean; the first snapshot is copied exactly (weight 1/1).
        torch._foreach_lerp_(self._avg_float, cur_float, 1.0 / self.n_averaged)
        if self._avg_other:
            torch._foreach_copy_(self._avg_other, cur_other)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "n_averaged": self.n_averaged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.n_averaged = int(state["n_averaged"])


@torch.no_grad()
def update_bn(model: nn.Module, batches: Iterable[torch.Tensor], forward: Callable[[], Any] | None = None) -> None:
    """Recompute every BatchNorm's running statistics as the exact average over ``batches`` (what
    ``torch.optim.swa_utils.update_bn`` does): reset them, set momentum None (cumulative average), forward in
    train mode, restore momenta and mode. ``forward`` is an optional context (autocast)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    for x in batches:
        if forward is None:
            model(x)
        else:
            with forward():
                model(x)
    for m in norms:
        m.momentum = momenta[m]
    model.train(was_training)
