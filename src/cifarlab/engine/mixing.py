"""Batch-level mixup and cutmix on normalised image batches, producing soft targets.

Each batch is paired with itself in reverse order (sample i with sample B-1-i, as timm does): the batch is already
a random draw, so this is as random as a permutation and costs no extra gather or RNG on the device. One mixing
coefficient ``lam`` per batch, drawn on the host from a ``random.Random`` that the trainer seeds per epoch (no
device sync, reproducible, resumable).

* mixup (Zhang et al., 2018): ``lam ~ Beta(a, a)``;  ``x = lam*x + (1-lam)*x_rev``
* cutmix (Yun et al., 2019): ``lam ~ Beta(a, a)`` sets a box of side ``sqrt(1-lam)`` times the image, centred
  uniformly and clipped at the borders; the box is pasted from ``x_rev``; ``lam`` is then recomputed as the
  KEPT-area fraction ``1 - box_area / (H*W)`` so the targets match the pixels exactly.

Targets: ``lam * one_hot(y) + (1-lam) * one_hot(y_rev)``; any loss of engine/losses.py takes them (for
cross-entropy this is exactly ``lam*CE(y) + (1-lam)*CE(y_rev)``). Training accuracy is measured against the
dominant label (``y`` if lam >= 0.5 else ``y_rev``).
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F


def mix_targets(y: torch.Tensor, lam: float, num_classes: int = 10) -> torch.Tensor:
    """Float (B, K) rows ``lam*one_hot(y) + (1-lam)*one_hot(y.flip(0))``; each row sums to 1."""
    a = F.one_hot(y, num_classes).float()
    return a * lam + a.flip(0) * (1 - lam)


def mixup(x: torch.Tensor, y: torch.Tensor, lam: float, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed images, soft targets) for a given ``lam``."""
    mixed = torch.lerp(x.flip(0), x, lam)  # x_rev + lam*(x - x_rev) = lam*x + (1-lam)*x_rev
    return mixed, mix_targets(y, lam, num_classes)


def cutmix_box(h: int, w: int, lam: float, rng: random.Random) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the box to paste: area about (1-lam)*H*W, centre uniform, clipped at the borders."""
    ratio = math.sqrt(1 - lam)
    bh, bw = int(h * ratio), int(w * ratio)
    cy, cx = rng.randrange(h), rng.randrange(w)
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    return y0, y1, x0, x1


def cutmix(
    x: torch.Tensor, y: torch.Tensor, box: tuple[int, int, int, int], num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(images with ``box`` pasted from the reversed batch, soft targets, lam = kept-area fraction)."""
    y0, y1, x0, x1 = box
    h, w = x.shape[-2:]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    out = x.clone()  # keeps channels_last
    out[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
    return out, mix_targets(y, lam, num_classes), lam


class BatchMixer:
    """``mixer(x, y, rng) -> (x, target, y_for_accuracy)``: mixup, cutmix, or the batch unchanged."""

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, mix_prob: float = 1.0,
                 num_classes: int = 10) -> None:
        self.mixup_alpha, self.cutmix_alpha, self.mix_prob = mixup_alpha, cutmix_alpha, mix_prob
        self.num_classes = num_classes

    @property
    def enabled(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Fixed draw order (apply?, which?, lam, box) keeps runs reproducible.
        if not self.enabled or rng.random() >= self.mix_prob:
            return x, y, y
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or rng.random() < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = rng.betavariate(alpha, alpha)
        if use_cutmix:
            x, target, lam = cutmix(x, y, cutmix_box(x.shape[-2], x.shape[-1], lam, rng), self.num_classes)
        else:
            x, target = mixup(x, y, lam, self.num_classes)
        return x, target, (y if lam >= 0.5 else y.flip(0))
