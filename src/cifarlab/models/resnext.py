"""ResNeXt for CIFAR: ResNeXt29 32x4d (kuangliu) and ResNeXt50 32x4d (torchvision widths, 3x3 stem)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from cifarlab.models.layers import check_positive
from cifarlab.models.registry import register
from cifarlab.models.resnet import Bottleneck, build_resnet


@register("resnext29_32x4d", "ResNeXt-29 32x4d, 1x1 stem as kuangliu, 3 stages x 3 blocks (4.77M)")
def resnext29_32x4d(num_classes: int = 10, cardinality: int = 32, bottleneck_width: int = 4,
                    depths: Sequence[int] = (3, 3, 3), stem_kernel: int = 1, activation: str = "relu",
                    activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
                    residual: bool = True, hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
    # kuangliu: group width C*d = 128 in stage 1, doubling per stage; blocks output 2x the group width.
    # The inner widths are C*d*2^i, so the grouped 3x3 always splits evenly into C groups.
    check_positive("cardinality", cardinality)
    check_positive("bottleneck_width", bottleneck_width)
    gw = cardinality * bottleneck_width
    widths = [2 * gw * 2**i for i in range(len(depths))]
    block = partial(Bottleneck, groups=cardinality, width_ratio=0.5)
    return build_resnet(block, depths, widths, num_classes, activation, activation_kwargs, init, norm=norm,
                        dropout=dropout, residual=residual, stem_kernel=stem_kernel, hidden=hidden)


@register("resnext50_32x4d", "ResNeXt-50 32x4d (torchvision widths), CIFAR 3x3 stem, [3,4,6,3] (22.99M)")
def resnext50_32x4d(num_classes: int = 10, cardinality: int = 32, bottleneck_width: int = 4,
                    depths: Sequence[int] = (3, 4, 6, 3), activation: str = "relu",
                    activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
                    residual: bool = True, hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
    # torchvision: inner width = planes * d/64 * C (128 for planes 64), output = 4 * planes.
    check_positive("cardinality", cardinality)
    check_positive("bottleneck_width", bottleneck_width)
    widths = [256 * 2**i for i in range(len(depths))]
    ratio = cardinality * bottleneck_width / 256
    block = partial(Bottleneck, groups=cardinality, width_ratio=ratio)
    return build_resnet(block, depths, widths, num_classes, activation, activation_kwargs, init, norm=norm,
                        dropout=dropout, residual=residual, hidden=hidden)
