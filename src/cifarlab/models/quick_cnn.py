"""``quick_cnn``: the small fast CNN of the quick preset (about 10M MACs, trains on a CPU in minutes)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cifarlab.models.layers import activation_factory, check_positive, check_rate, conv_bn_act, init_weights
from cifarlab.models.registry import register


class QuickCNN(nn.Sequential):
    """3 stages of ``convs_per_stage`` x (conv3x3-norm-act) + maxpool, then global max-pool and one Linear."""

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128), convs_per_stage: int = 1,
                 activation: str = "relu", norm: str = "batchnorm", dropout: float = 0.0,
                 activation_kwargs: dict | None = None) -> None:
        check_positive("widths", tuple(widths))
        check_positive("convs_per_stage", convs_per_stage)
        if len(widths) > 5:  # each stage halves the resolution: 32 -> 1 after five
            raise ValueError(f"at most 5 stages for 32x32 inputs, got widths={tuple(widths)}")
        act = activation_factory(activation, activation_kwargs)
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            for _ in range(int(convs_per_stage)):
                layers += conv_bn_act(cin, int(w), 3, norm=norm, act=act)
                cin = int(w)
            layers.append(nn.MaxPool2d(2))
        # Global max-pool: the head does not depend on the input size and stays tiny (128*10 weights).
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        if check_rate("dropout", dropout) > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(cin, num_classes))
        super().__init__(*layers)


@register("quick_cnn", "quick-preset CNN: 3 x (conv-BN-ReLU-maxpool) + global max-pool + FC (95k, 10M MACs)")
def quick_cnn(num_classes: int = 10, widths: Sequence[int] = (32, 64, 128), convs_per_stage: int = 1,
              activation: str = "relu", norm: str = "batchnorm", dropout: float = 0.0, init: str = "default",
              activation_kwargs: dict | None = None) -> nn.Module:
    model = QuickCNN(num_classes, widths, convs_per_stage, activation, norm, dropout, activation_kwargs)
    return init_weights(model, init)
