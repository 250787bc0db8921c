"""Internal covariate shift as defined by Santurkar et al. (2018), Definition 2.1.

At step t with batch (x, y): G_i = gradient of layer i's weights at w_t (every layer at step t); G'_i = the
same gradient, same batch, after layers 1..i-1 took their step-t update (they hold w_{t+1}, layers i.. still
w_t). ICS_i = ||G_i - G'_i||_2, and cos(G_i, G'_i) says whether the direction survives the earlier layers'
update. Like the probes, this works on copies through ``functional_call``: the model is not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from cifarlab.analysis.bn_study.probes import LossFn, loss_and_grads, named_trainable, preserved_rng


@dataclass
class LayerGroup:
    """One "layer" of Definition 2.1: a conv/linear weight and the parameters that belong with it."""

    weight: str  # name of the conv/linear weight whose gradient is G
    params: list[str]  # every trainable parameter of the layer (weight, bias, the BN affine that follows it)


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Conv2d/Linear layers in forward (registration) order; other parameters join the preceding layer.

    The BN scale/shift after a conv is updated together with that conv, so it belongs to its layer: "layers
    1..i-1 updated" then means everything upstream of layer i's weight.
    """
    owners = {f"{name}.weight": name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    groups: list[LayerGroup] = []
    for pname in named_trainable(model):
        if pname in owners:
            groups.append(LayerGroup(weight=pname, params=[pname]))
        elif groups:
            groups[-1].params.append(pname)
        # Parameters before the first conv/linear (none in VGG-A) have no layer; they stay at w_t.
    return groups


@dataclass
class ICSResult:
    layer: int  # 1-based index in layer_groups
    l2: float  # ||G - G'||_2
    cos: float  # cos(G, G')
    grad_norm: float  # ||G||_2, for scale


def ics_measure(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, before: dict[str, Tensor],
                after: dict[str, Tensor], layers: list[int]) -> list[ICSResult]:
    """Definition 2.1 for each 1-based layer index in ``layers``.

    ``before``/``after``: trainable parameters by name at w_t and w_{t+1} (the optimizer's actual update on
    this batch). The model's own parameters are not used, so it may already hold w_{t+1}.
    """
    groups = layer_groups(model)
    device = next(iter(before.values())).device
    results: list[ICSResult] = []
    with preserved_rng(device, model):
        _, grads = loss_and_grads(model, before, x, y, loss_fn)
        for i in layers:
            if not 1 <= i <= len(groups):
                raise ValueError(f"layer {i} out of range 1..{len(groups)}")
            mixed = dict(before)
            for group in groups[: i - 1]:
                for name in group.params:
                    mixed[name] = after[name]
            _, grads2 = loss_and_grads(model, mixed, x, y, loss_fn)
            w = groups[i - 1].weight
            g, g2 = grads[w].double().flatten(), grads2[w].double().flatten()
            denom = float(g.norm() * g2.norm())
            results.append(ICSResult(layer=i, l2=float((g - g2).norm()),
                                     cos=float(g @ g2) / denom if denom > 0 else 0.0, grad_norm=float(g.norm())))
    return results


def snapshot_params(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in named_trainable(model).items()}


__all__ = ["ICSResult", "LayerGroup", "ics_measure", "layer_groups", "snapshot_params"]

