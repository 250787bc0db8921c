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

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.config import LossConfig


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
        self.name = "cross_entropy" if name == "label_smoothing" else name
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
        hard = target.dtype == torch.int64
        if self.name == "cross_entropy":
            # torch handles both index and probability targets, and applies (1-eps)*t + eps/K itself.
            return F.cross_entropy(z, target if hard else target.float(), label_smoothing=self.smoothing)
        if self.name == "nll":
            logp = F.log_softmax(z, dim=1)
            if hard and self.smoothing == 0:
                return F.nll_loss(logp, target)
            return -(soft_targets(target, self.num_classes, self.smoothing) * logp).sum(1).mean()
        t = soft_targets(target, self.num_classes, self.smoothing)
        if self.name == "focal":
            logp = F.log_softmax(z, dim=1)
            weight = self.alpha.to(z.device) * (1 - logp.exp()).pow(self.gamma)  # 0^0 = 1: gamma 0 is CE
            return -(t * weight * logp).sum(1).mean()
        if self.name == "mse":
            out = z if self.mse_on == "logits" else z.softmax(dim=1)
            return (out - t).pow(2).sum(1).mean()
        if self.name == "bce":
            return F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(1).mean()
        if self.name == "multilabel_soft_margin":
            return F.multilabel_soft_margin_loss(z, t)
        raise AssertionError(f"unhandled loss {self.name}")  # the schema's Literal makes this unreachable


def build_loss(cfg: LossConfig, num_classes: int = 10) -> nn.Module:
    """A module ``loss(logits, targets) -> scalar mean loss`` (targets: int64 indices or float probabilities)."""
    return StrategyLoss(cfg.name, cfg.label_smoothing, cfg.focal_gamma, cfg.focal_alpha, cfg.mse_on, num_classes)
