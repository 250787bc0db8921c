"""ResNets for CIFAR (3x3 stem, no max-pool), after kuangliu/pytorch-cifar: ResNet18/34/50, PreActResNet18
and the 3-stage ResNet. The blocks are shared with ResNeXt, DLA and ``residual_cnn``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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

BlockFactory = Callable[..., nn.Module]


def projection(cin: int, cout: int, stride: int, norm: str, use_norm: bool = True) -> nn.Module:
    """1x1 conv shortcut (+ norm) when the shape changes, identity otherwise."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    # Conv bias only in norm-free nets: with norms, the next norm absorbs it (as kuangliu, bias=False).
    layers: list[nn.Module] = [conv2d(cin, cout, 1, stride, norm)]
    if use_norm and norm != "none":
        layers.append(make_norm2d(norm, cout))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """conv3x3-norm-act-conv3x3-norm (+ shortcut) -> act."""

    def __init__(self, cin: int, cout: int, stride: int = 1, act: ActFactory = nn.ReLU,
                 norm: str = "batchnorm", residual: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(conv2d(cin, cout, 3, stride, norm), make_norm2d(norm, cout), act(),
                                  conv2d(cout, cout, 3, 1, norm), make_norm2d(norm, cout))
        self.shortcut = projection(cin, cout, stride, norm) if residual else None
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return self.act(out if self.shortcut is None else out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (grouped for ResNeXt, carries the stride) -> 1x1 expand (+ shortcut) -> act.

    ``width_ratio`` = inner width / output width: 1/4 for ResNet-50, 1/2 for ResNeXt 32x4d.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, act: ActFactory = nn.ReLU,
                 norm: str = "batchnorm", residual: bool = True, groups: int = 1,
                 width_ratio: float = 0.25) -> None:
        super().__init__()
        w = int(cout * width_ratio)
        self.body = nn.Sequential(
            conv2d(cin, w, 1, 1, norm), make_norm2d(norm, w), act(),
            conv2d(w, w, 3, stride, norm, groups), make_norm2d(norm, w), act(),
            conv2d(w, cout, 1, 1, norm), make_norm2d(norm, cout),
        )
        self.shortcut = projection(cin, cout, stride, norm) if residual else None
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return self.act(out if self.shortcut is None else out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block: norm-act-conv3x3-norm-act-conv3x3 + shortcut (1x1 conv, no norm, as kuangliu)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, act: ActFactory = nn.ReLU,
                 norm: str = "batchnorm", residual: bool = True) -> None:
        super().__init__()
        self.pre = nn.Sequential(make_norm2d(norm, cin), act())
        self.body = nn.Sequential(conv2d(cin, cout, 3, stride, norm), make_norm2d(norm, cout), act(),
                                  conv2d(cout, cout, 3, 1, norm))
        self.shortcut = projection(cin, cout, stride, norm, use_norm=False) if residual else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.pre(x)
        # The projection sees the pre-activated input, the identity the raw one (He et al. 2016, kuangliu).
        short = None if self.shortcut is None else (
            x if isinstance(self.shortcut, nn.Identity) else self.shortcut(out))
        out = self.body(out)
        return out if short is None else out + short


class ResNet(nn.Module):
    """Stem conv, stages of ``block`` (stride 2 at the start of each stage but the first), pooled head."""

    def __init__(self, block: BlockFactory, depths: Sequence[int], widths: Sequence[int],
                 num_classes: int = 10, act: ActFactory = nn.ReLU, norm: str = "batchnorm",
                 dropout: float = 0.0, residual: bool = True, stem_width: int = 64, stem_kernel: int = 3,
                 stem_act: bool = True, pool_size: int = 1, final_act: bool = False,
                 hidden: Sequence[int] = ()) -> None:
        super().__init__()
        check_positive("depths", tuple(depths))
        check_positive("widths", tuple(widths))
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be an odd integer >= 1, got {stem_kernel!r}")
        if len(depths) != len(widths):
            raise ValueError(f"depths {tuple(depths)} and widths {tuple(widths)} need the same length")
        stem: list[nn.Module] = [conv2d(3, stem_width, stem_kernel, 1, norm)]
        if stem_act:
            stem += [make_norm2d(norm, stem_width), act()]
        self.stem = nn.Sequential(*stem)
        blocks, cin = [], stem_width
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            for j in range(int(depth)):
                blocks.append(block(cin, int(width), 2 if i > 0 and j == 0 else 1, act=act, norm=norm,
                                    residual=residual))
                cin = int(width)
        self.layers = nn.Sequential(*blocks)
        # Pre-activation nets end on a raw conv; ``final_act`` adds the norm-act that the paper puts there.
        self.post = nn.Sequential(make_norm2d(norm, cin), act()) if final_act else nn.Identity()
        self.head = classifier_head(cin, num_classes, dropout, pool_size, hidden, act)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.post(self.layers(self.stem(x))))


def build_resnet(block: BlockFactory, depths: Sequence[int], widths: Sequence[int], num_classes: int,
                 activation: str, activation_kwargs: dict[str, Any] | None, init: str,
                 **kw: Any) -> nn.Module:
    act = activation_factory(activation, activation_kwargs)
    model = ResNet(block, depths, widths, num_classes, act, **kw)
    return init_weights(model, init)


@register("resnet18", "ResNet-18, CIFAR 3x3 stem, basic blocks [2,2,2,2] (11.17M, kuangliu)")
def resnet18(num_classes: int = 10, widths: Sequence[int] = (64, 128, 256, 512),
             depths: Sequence[int] = (2, 2, 2, 2), activation: str = "relu",
             activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
             residual: bool = True, hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
    return build_resnet(BasicBlock, depths, widths, num_classes, activation, activation_kwargs, init,
                        norm=norm, dropout=dropout, residual=residual, hidden=hidden)


@register("resnet34", "ResNet-34, CIFAR 3x3 stem, basic blocks [3,4,6,3] (21.28M, kuangliu)")
def resnet34(num_classes: int = 10, widths: Sequence[int] = (64, 128, 256, 512),
             depths: Sequence[int] = (3, 4, 6, 3), activation: str = "relu",
             activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
             residual: bool = True, hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
    return build_resnet(BasicBlock, depths, widths, num_classes, activation, activation_kwargs, init,
                        norm=norm, dropout=dropout, residual=residual, hidden=hidden)


@register("resnet50", "ResNet-50, CIFAR 3x3 stem, bottlenecks [3,4,6,3] (23.52M, kuangliu)")
def resnet50(num_classes: int = 10, widths: Sequence[int] = (64, 128, 256, 512),
             depths: Sequence[int] = (3, 4, 6, 3), activation: str = "relu",
             activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
             residual: bool = True, hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
    # ``widths`` are the bottleneck (inner) widths, as in the papers; blocks output 4x that.
    check_positive("widths", tuple(widths))
    return build_resnet(Bottleneck, depths, [4 * w for w in widths], num_classes, activation,
                        activation_kwargs, init, norm=norm, dropout=dropout, residual=residual, hidden=hidden)


@register("preact_resnet18", "pre-activation ResNet-18, CIFAR 3x3 stem (11.17M, kuangliu)")
def preact_resnet18(num_classes: int = 10, widths: Sequence[int] = (64, 128, 256, 512),
                    depths: Sequence[int] = (2, 2, 2, 2), activation: str = "relu",
                    activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
                    residual: bool = True, final_act: bool = False, hidden: Sequence[int] = (),
                    init: str = "default") -> nn.Module:
    return build_resnet(PreActBlock, depths, widths, num_classes, activation, activation_kwargs, init,
                        norm=norm, dropout=dropout, residual=residual, stem_act=False, final_act=final_act,
                        hidden=hidden)


@register("resnet3stage", "3-stage ResNet 64/128/256, basic blocks [2,2,2], global avg-pool (2.78M)")
def resnet3stage(num_classes: int = 10, widths: Sequence[int] = (64, 128, 256),
                 depths: Sequence[int] = (2, 2, 2), activation: str = "relu",
                 activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
                 residual: bool = True, hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
    return build_resnet(BasicBlock, depths, widths, num_classes, activation, activation_kwargs, init,
                        norm=norm, dropout=dropout, residual=residual, hidden=hidden)
