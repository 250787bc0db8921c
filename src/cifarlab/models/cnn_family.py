"""Plain and residual CNN baselines: ``basic_cnn``, ``improved_cnn``, ``residual_cnn``.

``PlainCNN`` (conv stack from a cfg + MLP head) is also used by ``mynet`` and ``cnn3``. The layer lists that
give the reference counts were found by a search over plausible designs; see docs/models.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from cifarlab.models.layers import (
    NORMS,
    ActFactory,
    activation_factory,
    check_choice,
    check_positive,
    check_rate,
    conv_bn_act,
    init_weights,
    make_norm1d,
)
from cifarlab.models.registry import register
from cifarlab.models.resnet import BasicBlock, build_resnet


class PlainCNN(nn.Module):
    """``cfg`` convs (ints = widths, "M" = maxpool 2), flatten, hidden FCs [-> norm1d] -> act [-> dropout].

    The flatten width is computed from the conv arithmetic (no hard-coded 2048/4096), so kernel size, padding
    and widths can change freely; a spatial size that collapses below 1 is a ValueError.
    """

    def __init__(self, num_classes: int, cfg: Sequence[int | str], act: ActFactory,
                 hidden: Sequence[int] = (), kernel_size: int | Sequence[int] = 3,
                 padding: int | Sequence[int] | None = None, norm: str = "none", conv_bias: bool = True,
                 hidden_norm: str = "none", dropout: float = 0.0, input_size: int = 32) -> None:
        super().__init__()
        n_convs = sum(c != "M" for c in cfg)
        kernels = per_conv("kernel_size", kernel_size, n_convs)
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel_size must be an odd integer >= 1 or a list of them (one per conv), "
                             f"got {kernel_size!r}")
        pads = [k // 2 for k in kernels] if padding is None else per_conv("padding", padding, n_convs)
        if any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pads):
            raise ValueError(f"padding must be an integer >= 0 or a list of them (one per conv), got {padding!r}")
        check_rate("dropout", dropout)
        check_choice("hidden_norm", hidden_norm, NORMS)
        layers: list[nn.Module] = []
        cin, size, i = 3, input_size, 0
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                check_positive("widths", c)
                k, pad = kernels[i], pads[i]
                layers += conv_bn_act(cin, int(c), k, norm=norm, act=act, bias=conv_bias, padding=pad)
                cin, size, i = int(c), size + 2 * pad - k + 1, i + 1
            if size < 1:
                raise ValueError(f"kernel_size={kernel_size}, padding={padding} shrink a {input_size}px input "
                                 "to nothing")
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        fin = cin * size * size
        for h in hidden:
            check_positive("hidden", h)
            head.append(nn.Linear(fin, int(h)))
            if hidden_norm != "none":
                head.append(make_norm1d(hidden_norm, int(h)))
            head.append(act())
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            fin = int(h)
        head.append(nn.Linear(fin, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def per_conv(name: str, value: Any, n: int) -> list[Any]:
    """One value for every conv (an int) or one per conv (a list of exactly ``n``)."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} {list(value)} needs one value per conv ({n})")
        return list(value)
    return [value] * n


def stage_cfg(widths: Sequence[int], convs_per_stage: int | Sequence[int] = 1,
              pool: Sequence[bool] | None = None) -> list[int | str]:
    """(32, 64) -> [32, "M", 64, "M"]; ``pool`` switches each stage's max-pool on/off."""
    check_positive("widths", tuple(widths))
    check_positive("convs_per_stage", convs_per_stage)
    reps = [convs_per_stage] * len(widths) if isinstance(convs_per_stage, int) else list(convs_per_stage)
    pools = [True] * len(widths) if pool is None else list(pool)
    if not len(reps) == len(pools) == len(widths):
        raise ValueError("widths, convs_per_stage and pool need the same length")
    cfg: list[int | str] = []
    for w, r, p in zip(widths, reps, pools, strict=True):
        cfg += [int(w)] * int(r) + (["M"] if p else [])
    return cfg


def build_plain(num_classes: int, cfg: Sequence[int | str], activation: str, activation_kwargs: dict | None,
                init: str, **kw: Any) -> nn.Module:
    act = activation_factory(activation, activation_kwargs)
    return init_weights(PlainCNN(num_classes, cfg, act, **kw), init)


@register("basic_cnn", "basic CNN: 3 x (conv3x3-ReLU-maxpool) 32/64/128, FC 2048-512-10 (1.15M)")
def basic_cnn(num_classes: int = 10, widths: Sequence[int] = (32, 64, 128), hidden: Sequence[int] = (512,),
              kernel_size: int | Sequence[int] = 3, activation: str = "relu", activation_kwargs: dict | None = None,
              norm: str = "none", dropout: float = 0.0, init: str = "default") -> nn.Module:
    return build_plain(num_classes, stage_cfg(widths), activation, activation_kwargs, init, hidden=hidden,
                       kernel_size=kernel_size, norm=norm, dropout=dropout)


@register("improved_cnn", "6 conv+BN (64-M-128-M-256-256-M-512-512), FC 8192-1024+BN1d, dropout 0.5 (12.91M)")
def improved_cnn(num_classes: int = 10, widths: Sequence[int] = (64, 128, 256, 512),
                 convs_per_stage: Sequence[int] = (1, 1, 2, 2), hidden: Sequence[int] = (1024,),
                 kernel_size: int | Sequence[int] = 3, activation: str = "relu", activation_kwargs: dict | None = None,
                 norm: str = "batchnorm", hidden_norm: str = "batchnorm", dropout: float = 0.5,
                 init: str = "default") -> nn.Module:
    # No pool after the last stage: the FC sees 512 x 4 x 4 = 8192 features (what gives 12,906,250).
    cfg = stage_cfg(widths, convs_per_stage, [True] * (len(widths) - 1) + [False])
    return build_plain(num_classes, cfg, activation, activation_kwargs, init, hidden=hidden,
                       kernel_size=kernel_size, norm=norm, hidden_norm=hidden_norm, dropout=dropout)


@register("residual_cnn", "residual CNN: stem + 3 stages x 2 basic blocks 64/128/256, avg-pool 4x4 (2.82M)")
def residual_cnn(num_classes: int = 10, widths: Sequence[int] = (64, 128, 256),
                 depths: Sequence[int] = (2, 2, 2), pool_size: int = 4, activation: str = "relu",
                 activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
                 residual: bool = True, hidden: Sequence[int] = (), init: str = "default") -> nn.Module:
    check_positive("pool_size", pool_size)
    return build_resnet(BasicBlock, depths, widths, num_classes, activation, activation_kwargs, init,
                        norm=norm, dropout=dropout, residual=residual, pool_size=pool_size, hidden=hidden)
