"""Tiny hand-made inputs for every figure kind (no training): what tests/test_figures.py draws."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab.experiments.compare import RunRecord, aggregate
from cifarlab.experiments.tune_spec import ParamSpec
from cifarlab.io import write_csv

CLASSES10 = 10


def sweep_variants(root: Path, epochs: int = 2, seeds: dict[str, int] | None = None) -> list[Any]:
    """VariantStats of a fake sweep: per variant ``seeds[v]`` runs with epochs.csv, steps.csv and a summary."""
    seeds = seeds or {"baseline": 1, "wider_model": 3, "label_smoothing": 2}
    records = []
    rng = np.random.default_rng(0)
    for k, (variant, n) in enumerate(seeds.items()):
        for seed in range(n):
            d = root / variant / f"seed{seed}"
            d.mkdir(parents=True, exist_ok=True)
            acc = [0.5 + 0.1 * e + 0.01 * k + 0.005 * seed for e in range(epochs)]
            write_csv(d / "epochs.csv", [{"epoch": e + 1, "train_loss": 2.0 - 0.3 * e, "train_acc": a,
                                          "val_loss": 2.1 - 0.3 * e, "val_acc": a - 0.02}
                                         for e, a in enumerate(acc)])
            steps = 20 * epochs
            write_csv(d / "steps.csv", [{"step": i + 1, "epoch": i // 20 + 1,
                                         "lr": 0.1 * (1 + math.cos(math.pi * i / steps)) / 2} for i in range(steps)])
            conf = rng.integers(0, 20, (CLASSES10, CLASSES10)) + np.eye(CLASSES10, dtype=int) * 80
            per_class = {c: float(conf[i, i] / conf[i].sum()) for i, c in enumerate(_classes())}
            summary = {"status": "completed", "seed": seed, "final_val_acc": acc[-1] - 0.02, "test_acc": acc[-1],
                       "final_train_acc": acc[-1], "confusion": conf.tolist(), "per_class_test_acc": per_class}
            records.append(RunRecord(variant, seed, d, "completed", None, summary))
    return aggregate(records)


def _classes() -> list[str]:
    from cifarlab.data import CLASSES

    return list(CLASSES)


def tune_rows(n: int = 8) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        state = "pruned" if i % 4 == 3 else "complete"
        rows.append({"number": i, "state": state, "value": 0.6 + 0.03 * (i % 5) if state == "complete" else None,
                     "lr": 10 ** (-3 + 2 * i / n), "batch_size": (64, 128, 256)[i % 3], "epochs": 2})
    return rows


def tune_space() -> dict[str, ParamSpec]:
    return {"lr": ParamSpec("float", 1e-3, 1e-1, log=True),
            "batch_size": ParamSpec("categorical", choices=[64, 128, 256])}


def bn_runs(steps: int = 30, epochs: int = 2) -> list[dict[str, Any]]:
    """bn-study run records (train and ics parts) for two models, two LRs, two seeds."""
    runs = []
    for model in ("vgg_a", "vgg_a_bn"):
        for lr in (0.1, 0.5):
            for seed in (0, 1):
                loss = [2.3 * math.exp(-i / steps) + 0.05 * seed for i in range(steps)]
                runs.append({"name": f"{model}_lr{lr}_s{seed}", "status": "completed",
                             "spec": {"model": model, "lr": lr, "seed": seed, "optimizer": "sgd", "augment": False},
                             "step_loss": loss, "step_acc": [1 - v / 2.4 for v in loss],
                             "epochs": [{"epoch": e + 1, "val_acc": 0.3 + 0.1 * e} for e in range(epochs)],
                             "ics": [{"layer": layer, "step": st, "l2": 0.1 * (1 + layer) + 0.01 * st,
                                      "grad_norm": 1.0, "cos": 0.9 - 0.001 * st}
                                     for layer in (3, 6, 9) for st in range(0, steps, 10)]})
    return runs


def attribution_inputs(n: int = 16) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    maps = torch.rand(n, 1, 32, 32, generator=g)
    labels = torch.arange(n) % 10
    preds = (labels + (torch.arange(n) % 3 == 0).long()) % 10
    conf = torch.rand(n, generator=g)
    return images, maps, labels, preds, conf


def bowl(points: int = 21, span: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A loss surface shaped like a trained net's: a bowl that rises past the display clip at the edges."""
    axis = np.linspace(-span, span, points)
    xx, yy = np.meshgrid(axis, axis)
    return axis, axis, 0.3 + 12 * (xx**2 + 0.7 * yy**2)
