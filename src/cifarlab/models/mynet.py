"""``mynet``: LeNet-style course net, conv5x5(20)-BN-ReLU-pool, conv5x5(50)-BN-ReLU-pool, FC 1250-hidden-10.

Convs are unpadded ("valid"): 32 -> 28 -> 14 -> 10 -> 5, so 50 x 5 x 5 = 1250 features reach the FC.
Padding defaults to ``max(0, (kernel_size - 5) // 2)``: every odd kernel >= 5 keeps exactly 5 x 5 (7 -> 1,
9 -> 2). A 3x3 kernel cannot (it would need padding -1), so it runs unpadded too: 32 -> 30 -> 15 -> 13 -> 6,
i.e. 50 x 6 x 6 = 1800 FC inputs; the FC width always comes from this arithmetic, never a constant.
``kernel_size`` may be one per conv: ``[5, 3]`` (the report's "5x5 -> 3x3" reading used by the mynet presets:
the second conv 3x3) gives 32 -> 28 -> 14 -> 12 -> 6, 1800 FC inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cifarlab.models.cnn_family import build_plain, per_conv
from cifarlab.models.layers import check_positive
from cifarlab.models.registry import register


@register("mynet", "course MyNet: 2 x (conv5x5-BN-ReLU-pool) 20/50, FC 1250-100-10 (153k)")
def mynet(num_classes: int = 10, hidden: int | Sequence[int] = 100,
          kernel_size: int | Sequence[int] = 5, padding: int | Sequence[int] | None = None,
          channels: Sequence[int] = (20, 50), activation: str = "relu",
          activation_kwargs: dict | None = None, norm: str = "batchnorm", dropout: float = 0.0,
          init: str = "default") -> nn.Module:
    check_positive("channels", tuple(channels))
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    kernels = per_conv("kernel_size", kernel_size, len(channels))
    if padding is None:
        padding = [max(0, (k - 5) // 2) if isinstance(k, int) else k for k in kernels]
    cfg = [x for c in channels for x in (int(c), "M")]
    # Conv bias kept with BN, as in the course code (the 152,820 count includes it).
    return build_plain(num_classes, cfg, activation, activation_kwargs, init, hidden=hidden,
                       kernel_size=kernel_size, padding=padding, norm=norm, conv_bias=True, dropout=dropout)
