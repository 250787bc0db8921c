"""Which modules of a model produce feature maps, in execution order; default Grad-CAM and feature-map layers.

One forward pass of a dummy 32x32 batch with a hook on every module records, in the order modules RETURN (a
container returns after its children), each module's output shape and how often it was called. A module is a
valid attribution/feature-map layer when it is called exactly once per forward pass (Captum hooks the module;
a shared activation module would be ambiguous) and returns a 4-D (N, C, H, W) tensor with H, W > 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cifarlab.errors import ConfigError


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...] | None  # output shape for a batch of one (None: not a tensor)
    calls: int

    @property
    def spatial(self) -> bool:
        return self.shape is not None and len(self.shape) == 4 and self.shape[2] > 1 and self.shape[3] > 1


@torch.no_grad()
def trace_layers(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> list[LayerInfo]:
    """Every named module that ran, in the order it returned, with its output shape and call count."""
    order: list[str] = []
    shapes: dict[str, tuple[int, ...] | None] = {}
    calls: dict[str, int] = {}
    types: dict[str, str] = {}
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, _inp: object, out: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if name not in shapes:
                order.append(name)
                shapes[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
                types[name] = type(module).__name__
        return fn

    for name, module in model.named_modules():
        if name:  # the model itself is not a layer
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(torch.zeros(input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return [LayerInfo(n, types[n], shapes[n], calls[n]) for n in order]


def spatial_layers(model: nn.Module) -> list[LayerInfo]:
    """Layers usable for Grad-CAM and feature maps (called once, 4-D output larger than 1x1), execution order."""
    return [layer for layer in trace_layers(model) if layer.spatial and layer.calls == 1]


def default_target_layer(model: nn.Module) -> str:
    """Grad-CAM's default layer: the last feature map at the resolution of the last ``nn.Conv2d``.

    That is the output of the last convolutional stage before global pooling/the classifier (after its norm,
    activation and residual add, when those are modules): ``10`` (the last ReLU) for quick_cnn,
    ``features.11`` (the last conv unit) for VGG-A, ``layer4`` for ResNets. Falls back to the last Conv2d.
    """
    trace = trace_layers(model)
    convs = [i for i, layer in enumerate(trace) if layer.type == "Conv2d" and layer.shape is not None]
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no nn.Conv2d layer: pass --layer NAME (a module with a 4-D "
                          "output)")
    last = convs[-1]
    size = trace[last].shape[2:]  # type: ignore[index]
    same = [layer for layer in trace[last:] if layer.spatial and layer.calls == 1 and layer.shape[2:] == size]
    return same[-1].name if same else trace[last].name


def default_feature_layers(model: nn.Module, limit: int = 4) -> list[str]:
    """One layer per resolution: the last valid layer at each feature-map size (the end of each stage), at most
    ``limit`` of them (evenly spread over the network when there are more)."""
    ends: dict[tuple[int, ...], str] = {}
    for layer in spatial_layers(model):
        key = layer.shape[2:]  # type: ignore[index]
        ends.pop(key, None)  # re-insert: dict order = order of the LAST layer at each size
        ends[key] = layer.name
    names = list(ends.values())
    if len(names) > limit:
        step = (len(names) - 1) / (limit - 1)
        names = [names[round(i * step)] for i in range(limit)]
    return names


def resolve_layer(model: nn.Module, name: str, flag: str = "--layer") -> nn.Module:
    """The module called ``name``; ConfigError listing the valid names when it is not a valid layer."""
    valid = spatial_layers(model)
    names = [layer.name for layer in valid]
    if name in names:
        return model.get_submodule(name)
    listing = ", ".join(names) if len(names) <= 40 else f"(first 10) {', '.join(names[:10])} ... (last 25) " + \
        ", ".join(names[-25:])
    known = {layer.name: layer for layer in trace_layers(model)}
    if name in known:
        layer = known[name]
        why = (f"is called {layer.calls} times per forward pass" if layer.calls != 1 else
               f"outputs {'x'.join(map(str, layer.shape)) if layer.shape else 'no tensor'}, not a feature map")
        raise ConfigError(f"{flag}: layer '{name}' ({layer.type}) {why}; valid layers: {listing}")
    raise ConfigError(f"{flag}: unknown layer '{name}' in {type(model).__name__}; valid layers (modules with a "
                      f"4-D output, called once): {listing}")


__all__ = ["LayerInfo", "default_feature_layers", "default_target_layer", "resolve_layer", "spatial_layers",
           "trace_layers"]
