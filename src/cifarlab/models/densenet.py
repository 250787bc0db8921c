"""DenseNet-121 for CIFAR (kuangliu): 3x3 stem of 2k channels, growth k=32, [6,12,24,16], compression 0.5."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cifarlab.models.layers import (
    ActFactory,
    activation_factory,
    check_positive,
    classifier_head,
    conv2d,
    init_weights,
    make_norm2d,
)
from cifarlab.models.registry import register


class DenseLayer(nn.Module):
    """norm-act-conv1x1(4k)-norm-act-conv3x3(k), output concatenated to the input."""

    def __init__(self, cin: int, growth: int, act: ActFactory, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            make_norm2d(norm, cin), act(), conv2d(cin, 4 * growth, 1, 1, norm),
            make_norm2d(norm, 4 * growth), act(), conv2d(4 * growth, growth, 3, 1, norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.body(x), x], 1)


class DenseNet(nn.Module):
    def __init__(self, depths: Sequence[int], growth: int, reduction: float, num_classes: int,
                 act: ActFactory, norm: str, dropout: float, hidden: Sequence[int] = ()) -> None:
        super().__init__()
        check_positive("depths", tuple(depths))
        check_positive("growth_rate", growth)
        if not 0 < reduction <= 1:
            raise ValueError(f"reduction must be in (0, 1], got {reduction}")
        c = 2 * growth
        layers: list[nn.Module] = [conv2d(3, c, 3, 1, norm)]
        for i, depth in enumerate(depths):
            for _ in range(depth):
                layers.append(DenseLayer(c, growth, act, norm))
                c += growth
            if i < len(depths) - 1:  # transition: compress channels, halve the resolution
                out = int(c * reduction)
                layers += [make_norm2d(norm, c), act(), conv2d(c, out, 1, 1, norm), nn.AvgPool2d(2)]
                c = out
        layers += [make_norm2d(norm, c), act()]
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(c, num_classes, dropout, hidden=hidden, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register("densenet121", "DenseNet-121 for CIFAR, growth 32, [6,12,24,16] (6.96M, kuangliu)")
def densenet121(num_classes: int = 10, growth_rate: int = 32, depths: Sequence[int] = (6, 12, 24, 16),
                reduction: float = 0.5, activation: str = "relu", activation_kwargs: dict | None = None,
                norm: str = "batchnorm", dropout: float = 0.0, hidden: Sequence[int] = (),
                init: str = "default") -> nn.Module:
    act = activation_factory(activation, activation_kwargs)
    return init_weights(DenseNet(depths, growth_rate, reduction, num_classes, act, norm, dropout, hidden),
                        init)
