"""Dual Path Networks for CIFAR (kuangliu): DPN-26 and DPN-92, 3x3 stem of 64 channels."""

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

IN_PLANES = (96, 192, 384, 768)
OUT_PLANES = (256, 512, 1024, 2048)
DENSE_DEPTH = (16, 32, 24, 128)


class DualPathBlock(nn.Module):
    """Grouped bottleneck whose output splits into a residual part (added) and a dense part (concatenated)."""

    def __init__(self, cin: int, mid: int, out: int, dense: int, stride: int, first: bool, act: ActFactory,
                 norm: str, groups: int = 32) -> None:
        super().__init__()
        self.out = out
        self.body = nn.Sequential(
            conv2d(cin, mid, 1, 1, norm), make_norm2d(norm, mid), act(),
            conv2d(mid, mid, 3, stride, norm, groups), make_norm2d(norm, mid), act(),
            conv2d(mid, out + dense, 1, 1, norm), make_norm2d(norm, out + dense),
        )
        # Only the first block of a stage changes the shape; it projects the input to (out + dense) channels.
        self.shortcut: nn.Module = nn.Identity()
        if first:
            proj = conv2d(cin, out + dense, 1, stride, norm)
            self.shortcut = nn.Sequential(proj, make_norm2d(norm, out + dense))
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        y, x, d = self.body(x), self.shortcut(x), self.out
        return self.act(torch.cat([x[:, :d] + y[:, :d], x[:, d:], y[:, d:]], 1))


class DPN(nn.Module):
    def __init__(self, depths: Sequence[int], num_classes: int, act: ActFactory, norm: str, dropout: float,
                 in_planes: Sequence[int] = IN_PLANES, out_planes: Sequence[int] = OUT_PLANES,
                 dense_depth: Sequence[int] = DENSE_DEPTH, hidden: Sequence[int] = ()) -> None:
        super().__init__()
        check_positive("depths", tuple(depths))
        if not len(depths) == len(in_planes) == len(out_planes) == len(dense_depth):
            raise ValueError("depths, in_planes, out_planes and dense_depth need the same length")
        layers: list[nn.Module] = [conv2d(3, 64, 3, 1, norm), make_norm2d(norm, 64), act()]
        c = 64
        stages = zip(depths, in_planes, out_planes, dense_depth, strict=True)
        for s, (n, mid, out, dense) in enumerate(stages):
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                layers.append(DualPathBlock(c, mid, out, dense, stride, i == 0, act, norm))
                c = out + (i + 2) * dense  # the dense path grows by ``dense`` channels per block
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(c, num_classes, dropout, hidden=hidden, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _dpn(depths: Sequence[int], num_classes: int, activation: str, activation_kwargs: dict | None, norm: str,
         dropout: float, init: str, hidden: Sequence[int] = ()) -> nn.Module:
    act = activation_factory(activation, activation_kwargs)
    return init_weights(DPN(depths, num_classes, act, norm, dropout, hidden=hidden), init)


@register("dpn26", "Dual Path Network 26, blocks [2,2,2,2] (11.57M, kuangliu)")
def dpn26(num_classes: int = 10, depths: Sequence[int] = (2, 2, 2, 2), activation: str = "relu",
          activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
          hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
    return _dpn(depths, num_classes, activation, activation_kwargs, norm, dropout, init, hidden)


@register("dpn92", "Dual Path Network 92, blocks [3,4,20,3] (34.24M, kuangliu)")
def dpn92(num_classes: int = 10, depths: Sequence[int] = (3, 4, 20, 3), activation: str = "relu",
          activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
          hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
    return _dpn(depths, num_classes, activation, activation_kwargs, norm, dropout, init, hidden)
