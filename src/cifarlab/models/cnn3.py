"""``cnn3``: 3 x (conv3x3-BN-LeakyReLU-maxpool) with filters 64/128/256, FC 4096-512-256-10 with dropout."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cifarlab.models.cnn_family import build_plain, stage_cfg
from cifarlab.models.registry import register


@register("cnn3", "3 x (conv-BN-LeakyReLU(0.1)-pool) 64/128/256, FC 4096-512-256-10, dropout 0.5 (2.60M)")
def cnn3(num_classes: int = 10, filters: Sequence[int] = (64, 128, 256), hidden: Sequence[int] = (512, 256),
         kernel_size: int | Sequence[int] = 3, activation: str = "leaky_relu", activation_kwargs: dict | None = None,
         negative_slope: float | None = None, norm: str = "batchnorm", dropout: float = 0.5,
         init: str = "default") -> nn.Module:
    kwargs = dict(activation_kwargs or {})
    if activation == "leaky_relu":
        kwargs.setdefault("negative_slope", 0.1 if negative_slope is None else negative_slope)
    elif negative_slope is not None:
        raise ValueError(f"negative_slope only applies to activation 'leaky_relu', not {activation!r}")
    # Conv bias kept next to BN: the reference count 2,603,274 includes it. Dropout follows each hidden FC.
    return build_plain(num_classes, stage_cfg(filters), activation, kwargs, init, hidden=hidden,
                       kernel_size=kernel_size, norm=norm, conv_bias=True, dropout=dropout)
