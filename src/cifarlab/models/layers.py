"""Shared configurable building blocks: activations, 2-d norms, weight init, option checks.

Every family builds its non-linearities and norms through these helpers, so "activation" / "norm" / "init"
options mean the same thing (and fail the same way) for every model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import nn

# name -> constructor; its keyword arguments are the options the activation accepts (others: ValueError).
# Activations are never in-place: several blocks (pre-activation, identity shortcuts, DPN's split) still need
# the input of the activation, and an in-place op there silently corrupts the gradient.
_ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": lambda: nn.ReLU(),
    "relu6": lambda: nn.ReLU6(),
    "leaky_relu": lambda negative_slope=0.01, slope=None: nn.LeakyReLU(
        negative_slope if slope is None else slope
    ),
    "elu": lambda alpha=1.0: nn.ELU(alpha),
    "selu": lambda: nn.SELU(),
    "prelu": lambda num_parameters=1, init=0.25: nn.PReLU(num_parameters, init),
    "gelu": lambda approximate="none": nn.GELU(approximate=approximate),
    "silu": lambda: nn.SiLU(),
    "swish": lambda: nn.SiLU(),
    "mish": lambda: nn.Mish(),
    "softplus": lambda beta=1.0, threshold=20.0: nn.Softplus(beta, threshold),
    "sigmoid": lambda: nn.Sigmoid(),
    "tanh": lambda: nn.Tanh(),
    "hardtanh": lambda min_val=-1.0, max_val=1.0: nn.Hardtanh(min_val, max_val),
    # Softmax over channels (dim 1: over a conv's feature maps at each position, over a hidden FC's units).
    "softmax": lambda dim=1: nn.Softmax(dim),
}
ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATIONS)
NORMS: tuple[str, ...] = ("batchnorm", "none")
INIT_SCHEMES: tuple[str, ...] = (
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal",
)


def check_choice(kind: str, value: Any, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise ValueError listing the valid choices."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")
    return value


def check_rate(name: str, p: float) -> float:
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p!r}")
    return float(p)


def check_positive(name: str, value: Any, integer: bool = True) -> Any:
    """Accept a positive int (or number if not ``integer``) or a non-empty sequence of them (widths, ...)."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    kinds = (int,) if integer else (int, float)
    if len(values) == 0 or any(isinstance(v, bool) or not isinstance(v, kinds) or v <= 0 for v in values):
        what = "integer" if integer else "number"
        raise ValueError(f"{name} must be a positive {what} or a non-empty sequence of them, got {value!r}")
    return value


def make_activation(name: str = "relu", **kw: Any) -> nn.Module:
    """Build an activation by name; ``kw`` are its options (e.g. ``slope`` or ``negative_slope``)."""
    check_choice("activation", name, ACTIVATIONS)
    try:
        return _ACTIVATIONS[name](**kw)
    except TypeError:
        raise ValueError(f"bad options {kw!r} for activation {name!r}") from None


def activation_factory(name: str = "relu", kwargs: dict[str, Any] | None = None) -> Callable[[], nn.Module]:
    """Validate once, then return a zero-argument builder (each layer needs its own module, e.g. PReLU)."""
    kwargs = dict(kwargs or {})
    make_activation(name, **kwargs)  # fail early, at model build time, with the listing
    return lambda: make_activation(name, **kwargs)


def make_norm2d(kind: str, channels: int) -> nn.Module:
    """``"batchnorm"`` -> BatchNorm2d, ``"none"`` -> Identity."""
    check_choice("norm", kind, NORMS)
    return nn.BatchNorm2d(channels) if kind == "batchnorm" else nn.Identity()


def make_norm1d(kind: str, features: int) -> nn.Module:
    check_choice("norm", kind, NORMS)
    return nn.BatchNorm1d(features) if kind == "batchnorm" else nn.Identity()


ActFactory = Callable[[], nn.Module]


def conv2d(cin: int, cout: int, k: int = 3, stride: int = 1, norm: str = "batchnorm",
           groups: int = 1) -> nn.Conv2d:
    """k x k conv with 'same' padding; bias only without a norm (a norm's shift makes it redundant)."""
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=norm == "none")


def classifier_head(cin: int, num_classes: int, dropout: float = 0.0, pool_size: int = 1,
                    hidden: Sequence[int] = (), act: Callable[[], nn.Module] | None = None) -> nn.Sequential:
    """Adaptive average pool to ``pool_size`` x ``pool_size``, flatten, then per ``hidden`` width [dropout],
    Linear, act; finally [dropout], Linear. ``hidden=()`` is the plain pooled linear head."""
    check_rate("dropout", dropout)
    hidden = tuple(hidden)
    if hidden:
        check_positive("hidden", hidden)
        if act is None:
            raise ValueError("a hidden FC layer needs an activation")
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(pool_size), nn.Flatten()]
    fin = cin * pool_size * pool_size
    for width in (*hidden, None):
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(fin, num_classes if width is None else int(width)))
        if width is not None:
            layers.append(act())  # type: ignore[misc]  # checked above
            fin = int(width)
    return nn.Sequential(*layers)


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, norm: str = "batchnorm",
                act: Callable[[], nn.Module] | None = None, bias: bool | None = None, groups: int = 1,
                padding: int | None = None) -> list[nn.Module]:
    """conv (padding k//2 unless given) [+ norm] [+ act]; bias defaults to off when a norm follows."""
    bias = (norm == "none") if bias is None else bias
    pad = k // 2 if padding is None else padding
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=bias)]
    if norm != "none":
        layers.append(make_norm2d(norm, cout))
    if act is not None:
        layers.append(act())
    return layers


def init_weights(model: nn.Module, scheme: str = "default") -> nn.Module:
    """Re-initialise conv/linear weights with ``scheme`` (biases zero) and norms to weight 1, bias 0.

    ``"default"`` keeps PyTorch's own init untouched.
    """
    check_choice("init scheme", scheme, INIT_SCHEMES)
    if scheme == "default":
        return model
    fns: dict[str, Callable[[Any], Any]] = {
        "xavier_uniform": nn.init.xavier_uniform_,
        "xavier_normal": nn.init.xavier_normal_,
        "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
        "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
        "orthogonal": nn.init.orthogonal_,    # gain 1: rows (flattened filters) orthonormal
    }
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fns[scheme](m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
