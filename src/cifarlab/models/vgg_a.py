"""Course VGG-A family (8 conv + 3 FC, for 32x32 inputs) and its light / BN / dropout / residual variants.

Conv layers keep their bias even with BatchNorm, as the course code does (that is what gives 9,756,426 for
``vgg_a_bn``). Dropout follows the course's ``VGG_A_Dropout``: before each of the two hidden Linear layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from cifarlab.models.layers import activation_factory, check_positive, check_rate, init_weights, make_norm2d
from cifarlab.models.registry import register

VGG_A_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG_A_LIGHT_CFG: tuple[int | str, ...] = (16, "M", 32, "M")


def scale(width: int, mult: float) -> int:
    """Width multiplier rule shared by convs and FC hidden layers: round, at least 1."""
    return max(1, round(width * mult))


class ConvUnit(nn.Module):
    """conv3x3 (bias) -> norm -> act; with ``residual`` and equal in/out widths: act(norm(conv(x)) + x)."""

    def __init__(self, cin: int, cout: int, norm: str, act: nn.Module, residual: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = make_norm2d(norm, cout)
        self.act = act
        # Identity shortcuts only (no projection convs): the residual variant keeps the count of vgg_a_bn.
        self.residual = residual and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm(self.conv(x))
        return self.act(out + x if self.residual else out)


class VGGA(nn.Module):
    """Feature stack from ``cfg`` (ints = conv widths, "M" = maxpool 2) + MLP head with ``hidden`` widths."""

    def __init__(self, num_classes: int = 10, cfg: Sequence[int | str] = VGG_A_CFG,
                 hidden: Sequence[int] = (512, 512), width_mult: float = 1.0, activation: str = "relu",
                 activation_kwargs: dict[str, Any] | None = None, norm: str = "none", dropout: float = 0.0,
                 residual: bool = False) -> None:
        super().__init__()
        check_positive("width_mult", width_mult, integer=False)
        check_positive("hidden", tuple(hidden) or (1,))
        if any(c != "M" and not (isinstance(c, int) and c > 0) for c in cfg):
            raise ValueError(f"cfg entries must be positive ints or 'M', got {cfg!r}")
        act = activation_factory(activation, activation_kwargs)
        check_rate("dropout", dropout)
        layers: list[nn.Module] = []
        cin, size = 3, 32
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
            else:
                cout = scale(int(c), width_mult)
                layers.append(ConvUnit(cin, cout, norm, act(), residual))
                cin = cout
        if size < 1:
            raise ValueError(f"cfg {cfg!r} pools a 32x32 input below 1x1")
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        fin = cin * size * size
        for h in hidden:
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            hw = scale(int(h), width_mult)
            head += [nn.Linear(fin, hw), act()]
            fin = hw
        head.append(nn.Linear(fin, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _build(num_classes: int, init: str, negative_slope: float | None, activation: str,
           activation_kwargs: dict[str, Any] | None, **kw: Any) -> nn.Module:
    kwargs = dict(activation_kwargs or {})
    if negative_slope is not None:
        if activation != "leaky_relu":
            raise ValueError(f"negative_slope only applies to activation 'leaky_relu', not {activation!r}")
        kwargs["negative_slope"] = negative_slope
    return init_weights(VGGA(num_classes, activation=activation, activation_kwargs=kwargs, **kw), init)


def _variant(name: str, description: str, *, cfg: Sequence[int | str] = VGG_A_CFG,
             hidden: Sequence[int] = (512, 512), norm: str = "none", dropout: float = 0.0,
             residual: bool = False, activation: str = "relu", negative_slope: float | None = None) -> None:
    """Register one VGG-A variant: same options everywhere, only the defaults differ."""
    defaults = (cfg, hidden, norm, dropout, residual, activation, negative_slope)

    def factory(num_classes: int = 10, width_mult: float = 1.0, activation: str = defaults[5],
                activation_kwargs: dict[str, Any] | None = None, negative_slope: float | None = defaults[6],
                dropout: float = defaults[3], norm: str = defaults[2], residual: bool = defaults[4],
                hidden: Sequence[int] = defaults[1], cfg: Sequence[int | str] = defaults[0],
                init: str = "xavier_normal") -> nn.Module:
        return _build(num_classes, init, negative_slope, activation, activation_kwargs, cfg=cfg,
                      hidden=hidden, width_mult=width_mult, norm=norm, dropout=dropout, residual=residual)

    factory.__name__ = factory.__qualname__ = name
    register(name, description)(factory)


_variant("vgg_a", "course VGG-A, 8 conv + 3 FC, Xavier init (9.75M)")
_variant("vgg_a_bn", "course VGG-A with BatchNorm after every conv (9.76M)", norm="batchnorm")
_variant("vgg_a_light", "course VGG-A-Light: conv16-M-conv32-M, FC 2048-128-128-10 (285k)",
         cfg=VGG_A_LIGHT_CFG, hidden=(128, 128))
_variant("vgg_a_dropout", "course VGG-A with dropout 0.5 before the two hidden FC layers (9.75M)",
         dropout=0.5)
_variant("vgg_a_bn_dropout", "course VGG-A with BatchNorm and FC dropout 0.5 (9.76M)", norm="batchnorm",
         dropout=0.5)
_variant("vgg_a_bn_dropout_res", "VGG-A + BN + dropout + identity shortcuts on equal-width convs (9.76M)",
         norm="batchnorm", dropout=0.5, residual=True)
_variant("vgg_a_leaky", "course VGG-A with LeakyReLU(0.01) (9.75M)", activation="leaky_relu",
         negative_slope=0.01)
