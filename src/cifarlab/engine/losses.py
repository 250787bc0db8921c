"""Loss functions selected by ``loss.*`` config keys.

Every loss is ``loss(logits, target) -> scalar``, averaged over the batch, where ``target`` is either int64 class
indices (B,) or float probability rows (B, K) (soft targets from mixup/cutmix). Hard targets are the one-hot
special case: each loss gives the same value for ``y`` and ``one_hot(y)``. Label smoothing (``eps > 0``) replaces
any target row ``t`` by ``(1 - eps) * t + eps / K`` before the loss, for every loss.

Reductions (per sample, then the batch mean), see docs/strategies.md:

* cross_entropy / label_smoothing / nll:  ``-sum_k t_k log softmax(z)_k``
* focal:                  ``-sum_k t_k alpha_k (1 - p_k)^gamma log p_k``   (gamma 0, alpha None: cross-entropy)
* mse:                    ``sum_k (o_k - t_k)^2`` with ``o`` the logits or their softmax (= K x nn.MSELoss())
* bce:                    ``sum_k BCEWithLogits(z_k, t_k)``  (summed over classes, like the CE above)
* multilabel_soft_margin: ``mean_k BCEWithLogits(z_k, t_k)`` (torch's MultiLabelSoftMarginLoss = bce / K)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.config import LOSS_KEYS, LossConfig
from cifarlab.registry import Registry

# One entry per loss: ``fn(loss_module, fp32 logits, target) -> scalar`` and the ``loss.*`` keys specific to it
# (loss.label_smoothing applies to every loss).
LOSSES: Registry[Callable[[StrategyLoss, torch.Tensor, torch.Tensor], torch.Tensor]] = Registry(
    "loss", config_key="loss.name", declared=LOSS_KEYS)


def list_losses() -> list[str]:
    return LOSSES.names()


def soft_targets(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) class indices or (B, K) probabilities -> float (B, K) rows, label-smoothed by ``smoothing``."""
    t = F.one_hot(target, num_classes).float() if target.dtype == torch.int64 else target.float()
    if smoothing > 0:
        t = t * (1 - smoothing) + smoothing / num_classes
    return t


class StrategyLoss(nn.Module):
    """One of the losses above; hard targets take torch's fused kernels where one exists (faster, same value)."""

    def __init__(
        self,
        name: str = "cross_entropy",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        focal_alpha: float | list[float] | None = None,
        mse_on: str = "softmax",
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.name = name
        self.fn = LOSSES.get(name)
        self.smoothing = float(label_smoothing)
        self.gamma = float(focal_gamma)
        self.mse_on = mse_on
        self.num_classes = num_classes
        # A buffer (not a Python list) so the weights follow the module to the device once, not per step.
        alpha = torch.ones(num_classes) if focal_alpha is None else torch.as_tensor(focal_alpha, dtype=torch.float)
        self.register_buffer("alpha", alpha.expand(num_classes).clone(), persistent=False)

    def extra_repr(self) -> str:
        return f"name={self.name}, label_smoothing={self.smoothing}"

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()  # autocast may hand us bf16/fp16 logits; the loss is always computed in fp32
        return self.fn(self, z, target)


@LOSSES.register("cross_entropy", "-sum_k t_k log softmax(z)_k (torch's fused kernel)")
def _cross_entropy(m: StrategyLoss, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # torch handles both index and probability targets, and applies (1-eps)*t + eps/K itself.
    hard = target.dtype == torch.int64
    return F.cross_entropy(z, target if hard else target.float(), label_smoothing=m.smoothing)


LOSSES.register("label_smoothing", "cross_entropy that insists on loss.label_smoothing > 0")(_cross_entropy)


@LOSSES.register("nll", "nll_loss(log_softmax(z)): equals cross_entropy")
def _nll(m: StrategyLoss, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(z, dim=1)
    if target.dtype == torch.int64 and m.smoothing == 0:
        return F.nll_loss(logp, target)
    return -(soft_targets(target, m.num_classes, m.smoothing) * logp).sum(1).mean()


@LOSSES.register("focal", "-sum_k t_k alpha_k (1 - p_k)^gamma log p_k", keys=("focal_gamma", "focal_alpha"))
def _focal(m: StrategyLoss, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    t = soft_targets(target, m.num_classes, m.smoothing)
    logp = F.log_softmax(z, dim=1)
    weight = m.alpha.to(z.device) * (1 - logp.exp()).pow(m.gamma)  # 0^0 = 1: gamma 0 is CE
    return -(t * weight * logp).sum(1).mean()


@LOSSES.register("mse", "sum_k (o_k - t_k)^2, o = logits or softmax", keys=("mse_on",))
def _mse(m: StrategyLoss, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    t = soft_targets(target, m.num_classes, m.smoothing)
    out = z if m.mse_on == "logits" else z.softmax(dim=1)
    return (out - t).pow(2).sum(1).mean()


@LOSSES.register("bce", "sum_k BCEWithLogits(z_k, t_k), one-vs-all sigmoid")
def _bce(m: StrategyLoss, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    t = soft_targets(target, m.num_classes, m.smoothing)
    return F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(1).mean()


@LOSSES.register("multilabel_soft_margin", "mean_k BCEWithLogits(z_k, t_k) = bce / K")
def _multilabel_soft_margin(m: StrategyLoss, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.multilabel_soft_margin_loss(z, soft_targets(target, m.num_classes, m.smoothing))


def build_loss(cfg: LossConfig, num_classes: int = 10) -> nn.Module:
    """A module ``loss(logits, targets) -> scalar mean loss`` (targets: int64 indices or float probabilities)."""
    return StrategyLoss(cfg.name, cfg.label_smoothing, cfg.focal_gamma, cfg.focal_alpha, cfg.mse_on, num_classes)
