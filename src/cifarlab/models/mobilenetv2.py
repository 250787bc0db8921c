"""MobileNetV2 for CIFAR (kuangliu): stride 1 in the stem and the 24-channel stage, ReLU, 1280-d head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from cifarlab.models.layers import (
    ActFactory,
    activation_factory,
    check_positive,
    classifier_head,
    conv_bn_act,
    init_weights,
)
from cifarlab.models.registry import register

# (expansion, out channels, blocks, stride); kuangliu changes the 24-ch stage stride 2 -> 1 for 32x32 inputs.
CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; residual on stride-1 blocks (1x1 conv if needed)."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int, act: ActFactory, norm: str,
                 residual: bool) -> None:
        super().__init__()
        mid = expansion * cin
        # kuangliu keeps the 1x1 expansion conv even when expansion == 1.
        self.body = nn.Sequential(
            *conv_bn_act(cin, mid, 1, norm=norm, act=act),
            *conv_bn_act(mid, mid, 3, stride, norm=norm, act=act, groups=mid),
            *conv_bn_act(mid, cout, 1, norm=norm),  # linear bottleneck: no activation
        )
        self.shortcut: nn.Module | None = None
        if residual and stride == 1:
            self.shortcut = (nn.Identity() if cin == cout else
                             nn.Sequential(*conv_bn_act(cin, cout, 1, norm=norm)))

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return out if self.shortcut is None else out + self.shortcut(x)


@register("mobilenetv2", "MobileNetV2 for CIFAR, stride-1 stem (2.30M, kuangliu)")
def mobilenetv2(num_classes: int = 10, width_mult: float = 1.0, activation: str = "relu",
                activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
                residual: bool = True, cfg: Sequence[Sequence[int]] = CFG, hidden: Sequence[int] = (),
                init: str = "default") -> nn.Module:
    check_positive("width_mult", width_mult, integer=False)
    act = activation_factory(activation, activation_kwargs)

    def w(c: int) -> int:
        return max(1, round(c * width_mult))

    layers: list[nn.Module] = conv_bn_act(3, w(32), 3, norm=norm, act=act)
    cin = w(32)
    for expansion, cout, n, stride in cfg:
        for i in range(n):
            s = stride if i == 0 else 1
            layers.append(InvertedResidual(cin, w(cout), expansion, s, act, norm, residual))
            cin = w(cout)
    layers += conv_bn_act(cin, 1280, 1, norm=norm, act=act)
    model = nn.Sequential(nn.Sequential(*layers), classifier_head(1280, num_classes, dropout, hidden=hidden, act=act))
    return init_weights(model, init)
