"""Model zoo: importing this package registers every family; use ``create(name, **options)``."""

# Imported for their side effect: each family module registers its factories.
from cifarlab.models import (  # noqa: F401
    cnn3,
    cnn_family,
    densenet,
    dla,
    dpn,
    fast_net,
    mobilenetv2,
    mynet,
    noisy_bn,
    quick_cnn,
    resnet,
    resnext,
    vgg,
    vgg_a,
)
from cifarlab.models.registry import create, get_entry, list_models, register
from cifarlab.models.summary import count_macs, count_params, format_layer_table, layer_table, model_info

__all__ = [
    "count_macs", "count_params", "create", "format_layer_table", "get_entry", "layer_table", "list_models",
    "model_info", "register",
]
