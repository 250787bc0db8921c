"""The one evaluation: loss, accuracy, per-class accuracy and confusion of a model on uint8 images, and
``cifarlab eval`` (the same on a saved run or checkpoint)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.config import config_from_dict
from cifarlab.data import CLASSES, BatchAugment
from cifarlab.engine.build import autocast_context, build_augment, build_model, load_splits
from cifarlab.engine.checkpoint import load_checkpoint
from cifarlab.engine.environment import resolve_device
from cifarlab.engine.tta import tta_probs
from cifarlab.errors import CheckpointError


@dataclass
class EvalResult:
    loss: float
    acc: float
    per_class_acc: list[float]
    confusion: list[list[int]]  # confusion[true][pred]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    augment: BatchAugment,
    loss_fn: nn.Module,
    batch_size: int,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    num_classes: int = 10,
    tta: str = "none",
    tta_shift: int = 1,
    tta_confidence: float | None = None,
) -> EvalResult:
    """Loss, accuracy, per-class accuracy and confusion matrix of ``model`` (eval mode) on uint8 images.

    With ``tta`` other than "none" the prediction is the mean softmax over the views of engine/tta.py and the
    loss is its negative log-likelihood (``loss_fn`` is then not used: it expects logits).
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=images.device, dtype=torch.float64)
    confusion = torch.zeros(num_classes * num_classes, device=images.device, dtype=torch.int64)
    for start in range(0, len(images), batch_size):
        y = labels[start : start + batch_size]
        if tta == "none":
            x = augment.eval(images[start : start + batch_size])
            with autocast():
                logits = model(x)
            total_loss += loss_fn(logits.float(), y).double() * len(y)
        else:
            probs = tta_probs(model, images[start : start + batch_size], augment, tta, tta_shift, autocast,
                              tta_confidence)
            logits = probs.clamp_min(1e-12).log()  # log of the averaged distribution; argmax unchanged
            total_loss += F.nll_loss(logits, y).double() * len(y)
        pred = logits.argmax(1)
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
    model.train(was_training)
    conf = confusion.view(num_classes, num_classes).cpu()
    n = max(len(images), 1)
    per_class = (conf.diag().double() / conf.sum(1).clamp(min=1).double()).tolist()
    return EvalResult(loss=float(total_loss) / n, acc=float(conf.diag().sum()) / n, per_class_acc=per_class,
                      confusion=conf.tolist())


def averaged_state(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The averaged (EMA/SWA) weights a checkpoint holds, or None (v1 checkpoints called them ``eval_model``)."""
    return checkpoint.get("averaged", checkpoint.get("eval_model"))


def tested_weights(run_dir: Path) -> str:
    """Which checkpoint a run's test accuracy was measured on (``train.test_weights``): "last" or "best"."""
    try:
        return str(json.loads((run_dir / "summary.json").read_text()).get("test_weights") or "last")
    except (OSError, ValueError):
        return "last"


def resolve_checkpoint(target: str | Path, weights: str | None = None) -> Path:
    """A run directory -> its ``checkpoints/<weights>.pt`` (None: the weights the run was tested on); a file is
    taken as it is."""
    target = Path(target)
    if target.is_dir():
        weights = weights or tested_weights(target)
        path = target / "checkpoints" / f"{weights}.pt"
        if not path.is_file():
            raise CheckpointError(f"run directory '{target}' has no {weights} checkpoint ({path} missing)")
        return path
    if not target.exists():
        raise CheckpointError(f"'{target}' is neither a run directory nor a checkpoint file")
    return target


def evaluate_checkpoint(
    target: str | Path,
    weights: str | None = None,
    data_dir: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    path = resolve_checkpoint(target, weights)
    dev = resolve_device(device or "auto")
    state = load_checkpoint(path, map_location=dev)
    cfg = config_from_dict(state["config"])
    if data_dir is not None:
        cfg.data.dir = data_dir
    splits, _ = load_splits(cfg)
    model = build_model(cfg, dev)
    # The weights the run itself evaluates: the EMA/SWA average when the run kept one, else the raw weights.
    averaged = averaged_state(state)
    model.load_state_dict(averaged if averaged is not None else state["model"])
    result = evaluate(
        model, splits.test_x.to(dev), splits.test_y.to(dev), build_augment(cfg), nn.CrossEntropyLoss(),
        cfg.train.eval_batch_size, autocast_context(cfg, dev), tta=cfg.train.tta, tta_shift=cfg.train.tta_shift,
        tta_confidence=cfg.train.tta_confidence,
    )
    return {
        "checkpoint": str(path),
        "epoch": int(state["epoch"]),
        "averaged": averaged is not None,
        "tta": cfg.train.tta,
        "model": cfg.model.name,
        "test_images": len(splits.test_y),
        "test_loss": result.loss,
        "test_acc": result.acc,
        "per_class_acc": dict(zip(CLASSES, result.per_class_acc)),
        "confusion": result.confusion,
        "device": str(dev),
        "torch": torch.__version__,
    }
