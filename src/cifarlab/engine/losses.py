"""Loss functions selected by ``loss.*`` config keys."""

from __future__ import annotations

from torch import nn

from cifarlab.config import LossConfig


def build_loss(cfg: LossConfig) -> nn.Module:
    """A module ``loss(logits, targets) -> scalar mean loss`` (targets are int64 class indices)."""
    if cfg.name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    raise AssertionError(f"unhandled loss {cfg.name}")  # the schema's Literal makes this unreachable
