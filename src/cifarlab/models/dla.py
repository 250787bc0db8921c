"""Deep Layer Aggregation for CIFAR (kuangliu ``dla.py``, ``dla_simple.py``), on ResNet basic blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cifarlab.models.layers import (
    ActFactory,
    activation_factory,
    classifier_head,
    conv_bn_act,
    init_weights,
)
from cifarlab.models.registry import register
from cifarlab.models.resnet import BasicBlock


class Root(nn.Module):
    """Aggregation node: concatenate the inputs, 1x1 conv-norm-act."""

    def __init__(self, cin: int, cout: int, act: ActFactory, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn_act(cin, cout, 1, norm=norm, act=act))

    def forward(self, xs: list[Tensor]) -> Tensor:
        return self.body(torch.cat(xs, 1))


class Tree(nn.Module):
    """DLA tree: level 1 = two blocks + root over both. Level L > 1 (current kuangliu ``dla.py``): a
    ``prev_root`` block on the input, subtrees L-1..1 chained, two blocks, one root over all L + 2 outputs.
    """

    def __init__(self, cin: int, cout: int, level: int, stride: int, act: ActFactory, norm: str) -> None:
        super().__init__()
        # Subtrees L-1 .. 1 are chained; only the first one sees the input width and stride.
        self.subtrees = nn.ModuleList(
            Tree(cin, cout, i, stride, act, norm) if i == level - 1 else Tree(cout, cout, i, 1, act, norm)
            for i in reversed(range(1, level))
        )
        self.prev = BasicBlock(cin, cout, stride, act, norm) if level > 1 else None
        first_in, first_stride = (cin, stride) if level == 1 else (cout, 1)
        self.left = BasicBlock(first_in, cout, first_stride, act, norm)
        self.right = BasicBlock(cout, cout, 1, act, norm)
        self.root = Root((level + 2 if level > 1 else 2) * cout, cout, act, norm)

    def forward(self, x: Tensor) -> Tensor:
        xs = [] if self.prev is None else [self.prev(x)]
        for tree in self.subtrees:
            x = tree(x)
            xs.append(x)
        x = self.left(x)
        xs.append(x)
        xs.append(self.right(x))
        return self.root(xs)


class SimpleTree(nn.Module):
    """Binary DLA tree: root(left subtree, right subtree), leaves are basic blocks."""

    def __init__(self, cin: int, cout: int, level: int, stride: int, act: ActFactory, norm: str) -> None:
        super().__init__()
        if level == 1:
            self.left: nn.Module = BasicBlock(cin, cout, stride, act, norm)
            self.right: nn.Module = BasicBlock(cout, cout, 1, act, norm)
        else:
            self.left = SimpleTree(cin, cout, level - 1, stride, act, norm)
            self.right = SimpleTree(cout, cout, level - 1, 1, act, norm)
        self.root = Root(2 * cout, cout, act, norm)

    def forward(self, x: Tensor) -> Tensor:
        left = self.left(x)
        return self.root([left, self.right(left)])


class DLA(nn.Module):
    """Stem 16-16-32 convs, trees 64/128/256/512 (levels 1,2,2,1, strides 1,2,2,2), pooled linear head."""

    def __init__(self, tree: type[nn.Module], num_classes: int, act: ActFactory, norm: str,
                 dropout: float, hidden: Sequence[int] = ()) -> None:
        super().__init__()
        stem = conv_bn_act(3, 16, 3, norm=norm, act=act) + conv_bn_act(16, 16, 3, norm=norm, act=act)
        stem += conv_bn_act(16, 32, 3, norm=norm, act=act)
        trees = [tree(cin, cout, level, stride, act, norm) for cin, cout, level, stride in
                 ((32, 64, 1, 1), (64, 128, 2, 2), (128, 256, 2, 2), (256, 512, 1, 2))]
        self.features = nn.Sequential(*stem, *trees)
        self.head = classifier_head(512, num_classes, dropout, hidden=hidden, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register("dla", "Deep Layer Aggregation for CIFAR (16.29M, kuangliu dla.py)")
def dla(num_classes: int = 10, activation: str = "relu", activation_kwargs: dict | None = None,
        norm: str = "batchnorm", dropout: float = 0.0, hidden: Sequence[int] = (),
        init: str = "default") -> nn.Module:
    act = activation_factory(activation, activation_kwargs)
    return init_weights(DLA(Tree, num_classes, act, norm, dropout, hidden), init)


@register("simple_dla", "simplified binary-tree DLA for CIFAR (15.14M, kuangliu dla_simple.py)")
def simple_dla(num_classes: int = 10, activation: str = "relu", activation_kwargs: dict | None = None,
               norm: str = "batchnorm", dropout: float = 0.0, hidden: Sequence[int] = (),
               init: str = "default") -> nn.Module:
    act = activation_factory(activation, activation_kwargs)
    return init_weights(DLA(SimpleTree, num_classes, act, norm, dropout, hidden), init)
