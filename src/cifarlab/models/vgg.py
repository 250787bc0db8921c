"""Classic VGG-11/13/16/19 for CIFAR (kuangliu): conv3x3 (with bias)-BN-ReLU stacks, one Linear(512, 10)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from cifarlab.models.layers import activation_factory, check_positive, classifier_head, conv_bn_act, init_weights
from cifarlab.models.registry import register

CFG: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    def __init__(self, cfg: tuple[int | str, ...], num_classes: int, activation: str,
                 activation_kwargs: dict | None, norm: str, dropout: float, width_mult: float,
                 hidden: Sequence[int] = ()) -> None:
        super().__init__()
        check_positive("width_mult", width_mult, integer=False)
        act = activation_factory(activation, activation_kwargs)
        layers: list[nn.Module] = []
        cin = 3
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                cout = max(1, round(int(c) * width_mult))
                layers += conv_bn_act(cin, cout, 3, norm=norm, act=act, bias=True)  # kuangliu keeps conv bias
                cin = cout
        self.features = nn.Sequential(*layers)  # 32x32 -> 1x1 after five pools: the head needs no pooling
        # 32x32 -> 1x1 after five pools: the pooled head's pool is the identity, its FCs those of the old head.
        self.classifier = classifier_head(cin, num_classes, dropout, hidden=hidden, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _register(name: str, millions: float) -> None:
    def factory(num_classes: int = 10, width_mult: float = 1.0, activation: str = "relu",
                activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
                hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
        model = VGG(CFG[name], num_classes, activation, activation_kwargs, norm, dropout, width_mult, hidden)
        return init_weights(model, init)

    factory.__name__ = factory.__qualname__ = name
    depth = name[3:]
    register(name, f"VGG-{depth} with BatchNorm, one Linear head ({millions:.2f}M, kuangliu)")(factory)


for _name, _m in (("vgg11", 9.23), ("vgg13", 9.42), ("vgg16", 14.73), ("vgg19", 20.04)):
    _register(_name, _m)
