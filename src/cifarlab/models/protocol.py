"""What a model may offer the engine, beyond ``nn.Module``: optional, typed, checked with ``isinstance``.

A model implements none, some or all of these; the engine looks for them by protocol, so adding a model with a
data-dependent init or per-epoch switches needs no change in the trainer.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class DataInit(Protocol):
    """Initialised from a statistic of normalised, un-augmented training images (fast_net's patch whitening);
    called once before training (the checkpoint overwrites it on resume)."""

    def init_from_data(self, images: torch.Tensor) -> None: ...


@runtime_checkable
class EpochAware(Protocol):
    """Switches by epoch (0-based), called before each training epoch (fast_net freezes its whitening bias)."""

    def on_epoch_start(self, epoch: int) -> None: ...


@runtime_checkable
class WeightGroupParams(Protocol):
    """1-D parameters that train with the weights' LR and decay, not in the BN/bias group with its multiplier."""

    def weight_group_params(self) -> list[nn.Parameter]: ...


__all__ = ["DataInit", "EpochAware", "WeightGroupParams"]
