"""Where the model looks: Grad-CAM (Selvaraju et al. 2017), saliency (Simonyan et al. 2014) and integrated
gradients (Sundararajan et al. 2017), all computed by Captum (no hand-written copies).

* ``gradcam``: ``captum.attr.LayerGradCam`` on a convolutional layer (default: ``default_target_layer``):
  ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of d y_c / d A_k, upsampled to 32x32 with
  ``LayerAttribution.interpolate`` (bilinear, so the map stays non-negative).
* ``saliency``: ``captum.attr.Saliency``, |d y_c / d x|, max over the colour channels.
* ``ig``: ``captum.attr.IntegratedGradients`` from a black baseline in normalised space (the data-set mean
  image), |attribution| summed over the colour channels.

Every method returns one non-negative (N, 1, 32, 32) map per image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cifarlab.analysis.explain.layers import default_target_layer, resolve_layer
from cifarlab.analysis.explain.plots import new_figure, save_png, to_hwc
from cifarlab.data import CLASSES
from cifarlab.plotting import SUPTITLE_SIZE

METHOD_NAMES = {"gradcam": "Grad-CAM", "saliency": "saliency", "ig": "integrated gradients"}


def attribute(model: nn.Module, x: Tensor, target: Tensor, method: str = "gradcam", layer: str | None = None,
              ig_steps: int = 32, internal_batch_size: int = 64) -> Tensor:
    """Non-negative attribution maps (N, 1, H, W) of class ``target[i]`` for the normalised inputs ``x``.

    ``layer``: Grad-CAM's module name (None: the model's default). The model is put in eval mode and left so.
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    model.eval()
    x = x.detach().clone()
    target = target.to(x.device)
    h, w = x.shape[-2:]
    if method == "gradcam":
        module = resolve_layer(model, layer if layer is not None else default_target_layer(model))
        maps = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
        maps = LayerAttribution.interpolate(maps, (h, w), interpolate_mode="bilinear")
        return maps.detach()  # bilinear weights are convex: the ReLU'd map stays >= 0 (no clamp needed)
    if method == "saliency":
        grads = Saliency(model).attribute(x.requires_grad_(True), target=target, abs=True)
        return grads.detach().amax(dim=1, keepdim=True)
    if method == "ig":
        ig = IntegratedGradients(model)
        attr = ig.attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=ig_steps,
                            internal_batch_size=internal_batch_size)
        return attr.detach().abs().sum(dim=1, keepdim=True)
    raise ValueError(f"unknown attribution method {method!r}")


def mass_inside(maps: Tensor, masks: Tensor) -> Tensor:
    """Fraction of each map's total attribution that falls inside its boolean mask (N, H, W) -> (N,)."""
    m = maps.reshape(len(maps), -1).double()
    inside = (m * masks.reshape(len(masks), -1).double()).sum(1)
    return inside / m.sum(1).clamp_min(1e-30)


def plot_attributions(images: Tensor, maps: Tensor, labels: Tensor, preds: Tensor, conf: Tensor, path: Any,
                      method: str, layer: str | None, target: str) -> None:
    save_png(attribution_figure(images, maps, labels, preds, conf, method, layer, target), path)


def attribution_figure(images: Tensor, maps: Tensor, labels: Tensor, preds: Tensor, conf: Tensor, method: str,
                       layer: str | None, target: str) -> Any:
    """Two rows per block of up to 8 images: the test image, then the map over it (each map scaled to its max).
    Constrained layout: each block's titles get their own room below the previous block's maps."""
    pics = to_hwc(images)
    heat = maps[:, 0].detach().cpu().double().numpy()
    heat = heat / np.clip(heat.reshape(len(heat), -1).max(1), 1e-30, None)[:, None, None]
    n = len(pics)
    cols = min(n, 8)
    blocks = -(-n // cols)
    fig = new_figure(1.9 * cols, 4.6 * blocks + 0.4)
    for i in range(n):
        b, c = divmod(i, cols)
        ok = int(labels[i]) == int(preds[i])
        top = fig.add_subplot(2 * blocks, cols, 2 * b * cols + c + 1)
        top.imshow(pics[i], interpolation="nearest")
        top.set_title(f"true {CLASSES[int(labels[i])]}\npred {CLASSES[int(preds[i])]} ({100 * float(conf[i]):.0f} %)",
                      fontsize=8, color="black" if ok else "crimson")
        low = fig.add_subplot(2 * blocks, cols, (2 * b + 1) * cols + c + 1)
        low.imshow(pics[i], interpolation="nearest")
        low.imshow(heat[i], cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
        for ax in (top, low):
            ax.set_xticks([])
            ax.set_yticks([])
    where = f" at layer {layer}" if method == "gradcam" else ""
    fig.suptitle(f"{METHOD_NAMES[method]}{where} for the {'predicted' if target == 'pred' else 'true'} class: "
                 "each image, then its map (red title: misclassified)", fontsize=SUPTITLE_SIZE)
    return fig


__all__ = ["METHOD_NAMES", "attribute", "attribution_figure", "default_target_layer", "mass_inside",
           "plot_attributions"]
