"""Test-time augmentation (``train.tta``): the prediction is the MEAN OF SOFTMAX PROBABILITIES over views.

* ``none``: the image itself (1 view).
* ``flip``: the image and its horizontal mirror (2 views).
* ``flip_shift``: those two, each also shifted diagonally by (+s, +s) and (-s, -s) pixels with the padding of
  ``augment.pad_mode`` (reflect or zeros), s = ``train.tta_shift`` (6 views, equal weights).

Views are made on the uint8 batch with the same gather as training augmentation (``data.augment.crop_flip``),
then normalised; a view shifted by (+s, +s) shows at (i, j) the source pixel (i - s, j - s). Probabilities are
averaged (not logits) so the result is a proper distribution whose NLL is the evaluation loss; averaging logits,
or weighting the views as airbench94 does, changed validation accuracy by under 0.04 points over 11 runs
(benchmarks/tta_combine.py, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cifarlab.data.augment import BatchAugment, crop_flip

TTA_MODES = ("none", "flip", "flip_shift")


def tta_label(mode: str, confidence: float | None = None) -> str:
    """How a prediction was made, for logs and tables: "flip_shift", "flip_shift below 50 % confidence"."""
    return mode if confidence is None or mode == "none" else f"{mode} below {100 * confidence:g} % confidence"


def tta_views(x: torch.Tensor, mode: str, shift: int = 1, pad_mode: str = "reflect") -> list[torch.Tensor]:
    """The uint8 views of batch ``x`` (B, C, H, W) that ``mode`` averages over, in a fixed order."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta mode must be one of {TTA_MODES}, got {mode!r}")
    if mode == "none":
        return [x]
    b, dev = x.shape[0], x.device
    flip = torch.ones(b, dtype=torch.bool, device=dev)
    views = [x, crop_flip(x, None, None, flip)]
    if mode == "flip_shift":
        for d in (0, 2 * shift):  # offset 0 of the padded image: shift by +s; offset 2s: shift by -s
            off = torch.full((b,), d, dtype=torch.long, device=dev)
            for f in (None, flip):
                views.append(crop_flip(x, off, off, f, shift, pad_mode))
    return views


def _probs(model: nn.Module, augment: BatchAugment, x: torch.Tensor, autocast: Callable[[], Any]) -> torch.Tensor:
    with autocast():
        logits = model(augment.eval(x))
    return logits.float().softmax(dim=1)


@torch.no_grad()
def tta_probs(
    model: nn.Module,
    x: torch.Tensor,
    augment: BatchAugment,
    mode: str = "none",
    shift: int = 1,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    confidence: float | None = None,
) -> torch.Tensor:
    """Float32 (B, K): mean softmax of ``model`` (in its current mode) over the views of uint8 batch ``x``.

    ``confidence``: selective TTA. The image itself is seen first; only images whose max probability is below
    ``confidence`` get the other views (and their mean over all views), the rest keep the plain prediction.
    Most images of a trained model are confident, so this skips most of TTA's cost."""
    plain = _probs(model, augment, x, autocast)
    if mode == "none":
        return plain
    todo = torch.arange(len(x), device=x.device)
    if confidence is not None:
        todo = (plain.max(dim=1).values < confidence).nonzero().squeeze(1)
        if len(todo) == 0:
            return plain
    views = tta_views(x[todo], mode, shift, augment.pad_mode)
    total = plain[todo]
    for v in views[1:]:  # summed in view order, as the mean over all views always was
        total = total + _probs(model, augment, v, autocast)
    out = plain.clone()
    out[todo] = total / len(views)
    return out
