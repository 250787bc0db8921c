"""Model size helpers: trainable parameter count, MACs (via torch's FlopCounterMode) and a per-layer table."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cifarlab.models.registry import create, get_entry


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass (FLOPs / 2 as counted by ``FlopCounterMode``).

    FlopCounterMode counts matmul-like ops (conv, linear, bmm); norms, activations and pooling are not
    counted, which is the usual convention for MAC figures.
    """
    was_training = model.training
    model.eval()  # BN in eval mode: no batch statistics, and batch size 1 is allowed
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(input_size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def model_info(name: str, **options: Any) -> dict[str, Any]:
    """``dict(name, params, macs, description)`` for a registered model built with ``options``.

    Built on the meta device and given uninitialised memory (``to_empty``): the weight initialisation, most of
    the time of listing every model on a small CPU, is skipped; shapes, parameter and MAC counts are the same.
    A model that cannot be built that way is built the ordinary way."""
    try:
        with torch.device("meta"):
            model = create(name, **options)
        model = model.to_empty(device="cpu")
    except Exception:  # any meta-device limitation (a real error re-raises from the ordinary build)
        model = create(name, **options)
    return {"name": name, "params": count_params(model), "macs": count_macs(model),
            "description": get_entry(name).description}


@torch.no_grad()
def layer_table(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> list[dict[str, Any]]:
    """One row per leaf-module call: ``name``, ``type``, ``output_shape`` and ``params`` (own, trainable).

    A module called twice (e.g. a shared activation) gets a row per call but its params only on the first, so
    the ``params`` column always sums to ``count_params(model)`` for models whose parameters live in leaves.
    """
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, _inp: Any, out: Any) -> None:
            first = id(module) not in seen
            seen.add(id(module))
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            own = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
            rows.append({"name": name, "type": type(module).__name__, "output_shape": shape,
                         "params": own if first else 0})
        return fn

    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return rows


def format_layer_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table of ``layer_table`` rows with a total line."""
    header = ("layer", "type", "output shape", "params")
    body = [(r["name"], r["type"], "x".join(map(str, r["output_shape"] or ())) or "-", f"{r['params']:,}")
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + f"  {{:>{widths[-1]}}}"
    lines = [fmt.format(*header), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += [fmt.format(*row) for row in body]
    lines.append(f"total trainable params: {sum(r['params'] for r in rows):,}")
    return "\n".join(lines)
