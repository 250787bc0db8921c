"""What the convolutions learned: first-layer filters as RGB images, deeper filters summarised, feature maps.

* First layer: each (3, k, k) filter of the first ``nn.Conv2d`` drawn as a k x k RGB patch, min-max scaled per
  filter (only the pattern is comparable between filters; their norms are in the deeper-layer figure).
* Deeper layers: for every later Conv2d, the distribution of its per-filter L2 norms (box plot per layer) and
  its mean |weight| per kernel position (which taps of the k x k kernels the layer uses).
* Deeper filters as images: for up to 8 later k x k convs (evenly spaced), the first 16 filters, each drawn as
  its kernel on the input channel it weighs most (largest L2 norm), diverging colours around 0 scaled per filter.
* Feature maps: forward hooks on chosen layers (default: the end of each resolution stage), the 8 channels
  with the largest mean activation over the shown images, each tile min-max scaled.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cifarlab.analysis.explain.layers import resolve_layer, trace_layers
from cifarlab.analysis.explain.plots import feature_cmap, mosaic, new_figure, save_png, to_hwc, unit_range
from cifarlab.data import CLASSES
from cifarlab.errors import ConfigError
from cifarlab.plotting import SUPTITLE_SIZE, TITLE_SIZE


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Conv2d modules in execution order (the order of the forward pass, not of registration)."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    ordered = [layer.name for layer in trace_layers(model) if layer.name in convs]
    return [(name, convs[name]) for name in ordered]


def first_layer_rgb(weight: Tensor) -> np.ndarray:
    """(C_out, 3, k, k) conv weights -> (C_out, k, k, 3) images in [0, 1], min-max scaled per filter.
    Other input widths: the mean over input channels as grey."""
    w = weight.detach().cpu().double()
    img = w.permute(0, 2, 3, 1).numpy() if w.shape[1] == 3 else np.repeat(w.mean(1).numpy()[..., None], 3, -1)
    return unit_range(img, axis=(1, 2, 3))


def conv_desc(name: str, conv: nn.Conv2d) -> str:
    """A convolution as a reader knows it: module name with its shape, e.g. "features.4: 32->64, 3x3"."""
    kh, kw = conv.weight.shape[2:]
    return f"{name}: {conv.in_channels}->{conv.out_channels}, {kh}x{kw}"


def plot_first_layer(model: nn.Module, path: Path) -> dict[str, Any]:
    convs = conv_layers(model)
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no nn.Conv2d layer: nothing to show for --parts filters")
    name, conv = convs[0]
    save_png(first_layer_figure(name, conv), path)
    norms = conv.weight.detach().double().reshape(conv.weight.shape[0], -1).norm(dim=1)
    return {"layer": name, "filters": conv.weight.shape[0], "kernel": list(conv.weight.shape[2:]),
            "norm_mean": float(norms.mean()), "norm_min": float(norms.min()), "norm_max": float(norms.max())}


def first_layer_figure(name: str, conv: nn.Conv2d) -> Any:
    tiles = first_layer_rgb(conv.weight)
    cols = math.ceil(math.sqrt(len(tiles)))
    fig = new_figure(min(12.0, max(5.0, 0.55 * cols + 1.5)), min(12.0, 0.55 * math.ceil(len(tiles) / cols) + 1.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(mosaic(tiles, cols, pad=1, fill=1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    k = tuple(conv.weight.shape[2:])
    ax.set_title(f"First convolution: {len(tiles)} filters of {k[0]}x{k[1]} over {conv.weight.shape[1]} input "
                 "channels\n(RGB, each filter scaled to its own min..max)", fontsize=TITLE_SIZE)
    ax.set_xlabel(f"one tile per filter, row by row (module {name!r})", fontsize=9)
    return fig


def plot_deep_filters(model: nn.Module, path: Path, max_kernels: int = 12) -> dict[str, Any]:
    """Per-filter norms of every Conv2d after the first (box plots) + mean |w| per tap of up to ``max_kernels``."""
    convs = conv_layers(model)[1:]
    fig = deep_filters_figure(convs, max_kernels)
    save_png(fig, path)
    if not convs:
        return {"layers": 0}
    norms = [_filter_norms(m) for _, m in convs]
    return {"layers": len(convs), "norm_mean_per_layer": {n: float(v.mean()) for (n, _), v in zip(convs, norms)}}


def _filter_norms(m: nn.Conv2d) -> np.ndarray:
    return m.weight.detach().double().reshape(m.weight.shape[0], -1).norm(dim=1).cpu().numpy()


def _evenly(items: list[Any], k: int) -> list[Any]:
    if len(items) <= k:
        return items
    step = (len(items) - 1) / (k - 1)
    return [items[round(i * step)] for i in range(k)]


def deep_filters_figure(convs: list[tuple[str, nn.Conv2d]], max_kernels: int = 12) -> Any:
    if not convs:
        fig = new_figure(6, 2)
        fig.text(0.5, 0.5, "the model has a single convolution", ha="center", va="center")
        return fig
    spatial = _evenly([(n, m) for n, m in convs if m.weight.shape[-1] * m.weight.shape[-2] > 1], max_kernels)
    cols = max(len(spatial), 1)
    fig = new_figure(max(7.0, 0.6 * len(convs) + 3, 1.5 * cols + 1), 6.4)
    grid = fig.add_gridspec(2, cols, height_ratios=[1.8, 1])
    ax = fig.add_subplot(grid[0, :])
    ax.boxplot([_filter_norms(m) for _, m in convs], showfliers=False)
    ax.set_xticks(range(1, len(convs) + 1), [conv_desc(n, m).replace(": ", "\n") for n, m in convs],
                  rotation=0 if len(convs) <= 8 else 60, fontsize=8)
    ax.set_xlabel("convolution (module name, in->out channels, kernel)")
    ax.set_ylabel("per-filter L2 norm")
    ax.set_title(f"Deeper convolutions ({len(convs)} layers): spread of each layer's filter norms\n(box: "
                 "quartiles, whiskers: range; below: mean |weight| per kernel position)", fontsize=TITLE_SIZE)
    ax.grid(axis="y", alpha=0.3)
    im, taps = None, []
    for i, (name, m) in enumerate(spatial):
        tap = m.weight.detach().abs().double().mean(dim=(0, 1)).cpu().numpy()
        a = fig.add_subplot(grid[1, i])
        # each layer's map divided by its largest tap, so that one colour bar reads for all of them
        im = a.imshow(tap / max(tap.max(), 1e-30), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        a.set_title(name, fontsize=8)
        a.set_xticks([])
        a.set_yticks([])
        taps.append(a)
    if im is not None:
        fig.colorbar(im, ax=taps, label="mean |w| per tap\n(/ layer max)", shrink=0.9)
    return fig


def deep_filter_tiles(weight: Tensor, max_filters: int = 16) -> np.ndarray:
    """(C_out, C_in, k, k) -> (n, k, k) kernels in [-1, 1]: each filter's strongest input channel (largest L2
    norm), divided by its largest |w| (0 stays 0: the sign pattern is what is shown)."""
    w = weight.detach().cpu().double()[:max_filters]
    strongest = w.flatten(2).norm(dim=2).argmax(1)
    k = w[torch.arange(len(w)), strongest]
    return (k / k.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None]).numpy()


def plot_deep_filter_images(model: nn.Module, path: Path, max_layers: int = 8, max_filters: int = 16) -> dict:
    """Deeper convs' kernels as images: one row per layer (up to ``max_layers``, evenly spaced)."""
    spatial = [(n, m) for n, m in conv_layers(model)[1:] if m.weight.shape[-1] * m.weight.shape[-2] > 1]
    spatial = _evenly(spatial, max_layers)
    fig = new_figure(0.5 * max_filters + 2.5, 0.75 * max(len(spatial), 1) + 1.0)
    if not spatial:
        fig.text(0.5, 0.5, "no k x k convolution after the first", ha="center", va="center")
    for row, (name, m) in enumerate(spatial):
        ax = fig.add_subplot(len(spatial), 1, row + 1)
        tiles = deep_filter_tiles(m.weight, max_filters)
        ax.imshow(mosaic(tiles, len(tiles), pad=1), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"deeper filters: first {max_filters} of each layer, the kernel on each filter's strongest input "
                 "channel (red > 0 > blue, scaled per filter)", fontsize=SUPTITLE_SIZE - 1)
    save_png(fig, path)
    return {"layers": [n for n, _ in spatial], "filters_per_layer": max_filters}


@torch.no_grad()
def capture(model: nn.Module, x: Tensor, names: list[str]) -> dict[str, Tensor]:
    """Outputs of the named layers for input ``x`` (eval mode), via forward hooks removed afterwards."""
    out: dict[str, Tensor] = {}
    handles = []
    for name in names:
        module = resolve_layer(model, name, flag="--feature-layers")
        handles.append(module.register_forward_hook(lambda _m, _i, o, n=name: out.__setitem__(n, o.detach())))
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def plot_feature_maps(model: nn.Module, x: Tensor, images: Tensor, labels: Tensor, names: list[str],
                      path: Path, channels: int = 8) -> dict[str, Any]:
    """Rows: images; columns: the input, then per layer a 2 x 4 mosaic of its most active channels."""
    maps = capture(model, x, names)
    pics = to_hwc(images)
    fig = new_figure(1.8 + 2.6 * len(names), 2.0 * len(pics) + 0.6)
    info: dict[str, Any] = {}
    for col, name in enumerate(names):
        a = maps[name].float().cpu()
        top = a.mean(dim=(0, 2, 3)).argsort(descending=True)[:channels]
        info[name] = {"shape": list(a.shape[1:]), "channels_shown": top.tolist()}
        for row in range(len(pics)):
            tiles = unit_range(a[row, top].double().numpy(), axis=(1, 2))
            ax = fig.add_subplot(len(pics), len(names) + 1, row * (len(names) + 1) + col + 2)
            ax.imshow(mosaic(tiles, cols=min(4, len(tiles)), pad=1), cmap=feature_cmap(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                c, h, w = a.shape[1:]
                ax.set_title(f"{name}\n{c}x{h}x{w}", fontsize=8)
    for row in range(len(pics)):
        ax = fig.add_subplot(len(pics), len(names) + 1, row * (len(names) + 1) + 1)
        ax.imshow(pics[row], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(CLASSES[int(labels[row])], fontsize=8)
        if row == 0:
            ax.set_title("input", fontsize=8)
    fig.suptitle(f"feature maps: the {channels} most active channels of each layer (each tile scaled to its "
                 "own range)", fontsize=SUPTITLE_SIZE - 1)
    save_png(fig, path)
    return info


__all__ = ["capture", "conv_desc", "conv_layers", "deep_filter_tiles", "deep_filters_figure", "first_layer_figure",
           "first_layer_rgb", "plot_deep_filter_images", "plot_deep_filters", "plot_feature_maps", "plot_first_layer"]
