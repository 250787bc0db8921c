"""`cifarlab eval`: test accuracy and per-class accuracy of a saved run or checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarlab.config import config_from_dict
from cifarlab.data import CLASSES, load_cifar10, make_splits
from cifarlab.engine.checkpoint import load_checkpoint
from cifarlab.engine.environment import resolve_device
from cifarlab.engine.trainer import autocast_context, build_augment, build_model, evaluate
from cifarlab.errors import CheckpointError


def resolve_checkpoint(target: str | Path, weights: str = "last") -> Path:
    """A run directory -> its ``checkpoints/<weights>.pt``; a file is taken as it is."""
    target = Path(target)
    if target.is_dir():
        path = target / "checkpoints" / f"{weights}.pt"
        if not path.is_file():
            raise CheckpointError(f"run directory '{target}' has no {weights} checkpoint ({path} missing)")
        return path
    if not target.exists():
        raise CheckpointError(f"'{target}' is neither a run directory nor a checkpoint file")
    return target


def evaluate_checkpoint(
    target: str | Path,
    weights: str = "last",
    data_dir: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    path = resolve_checkpoint(target, weights)
    dev = resolve_device(device or "auto")
    state = load_checkpoint(path, map_location=dev)
    cfg = config_from_dict(state["config"])
    if data_dir is not None:
        cfg.data.dir = data_dir
    data = load_cifar10(cfg.data.dir, download=cfg.data.download)
    d = cfg.data
    splits = make_splits(data, val_size=d.val_size, subset=d.subset, test_subset=d.test_subset, seed=d.split_seed)
    model = build_model(cfg, dev)
    # The weights the run itself evaluates: the EMA/SWA average when the run kept one, else the raw weights.
    averaged = state.get("eval_model")
    model.load_state_dict(averaged if averaged is not None else state["model"])
    result = evaluate(
        model, splits.test_x.to(dev), splits.test_y.to(dev), build_augment(cfg), nn.CrossEntropyLoss(),
        cfg.train.eval_batch_size, autocast_context(cfg, dev), tta=cfg.train.tta, tta_shift=cfg.train.tta_shift,
    )
    return {
        "checkpoint": str(path),
        "epoch": int(state["epoch"]),
        "averaged_weights": averaged is not None,
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
