"""What the model gets wrong: predictions on the test split, the most confident mistakes, confusion matrix and
per-class accuracy (plain eval-mode forward passes, no test-time augmentation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cifarlab.analysis.explain.plots import new_figure, save_png, to_hwc
from cifarlab.data import CLASSES, BatchAugment
from cifarlab.plotting import SUPTITLE_SIZE, draw_confusion


@dataclass
class Predictions:
    logits: Tensor  # (N, classes) float32, CPU
    labels: Tensor  # (N,) int64, CPU

    @property
    def probs(self) -> Tensor:
        return self.logits.softmax(1)

    @property
    def preds(self) -> Tensor:
        return self.logits.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).double().mean()) if len(self.labels) else float("nan")


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, labels: Tensor, augment: BatchAugment, batch_size: int,
            device: torch.device) -> Predictions:
    """Logits of ``model`` (eval mode) on uint8 ``images``, normalised as in evaluation, in batches."""
    model.eval()
    out = [model(augment.eval(images[i : i + batch_size].to(device))).float().cpu()
           for i in range(0, len(images), batch_size)]
    logits = torch.cat(out) if out else torch.zeros(0, len(CLASSES))
    return Predictions(logits, labels.cpu())


def confident_mistakes(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` misclassified samples with the highest softmax confidence in their (wrong)
    prediction, most confident first; ties keep the lower index first. Fewer when there are fewer mistakes."""
    probs = logits.float().softmax(1)
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != labels, as_tuple=False).flatten()
    order = torch.sort(-conf[wrong], stable=True).indices
    return wrong[order[:k]]


def confusion_matrix(preds: Tensor, labels: Tensor, classes: int = len(CLASSES)) -> np.ndarray:
    """confusion[true, pred] counts."""
    flat = torch.bincount(labels.long() * classes + preds.long(), minlength=classes * classes)
    return flat.view(classes, classes).numpy()


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    return np.diag(confusion) / np.clip(confusion.sum(1), 1, None)


def plot_mistakes(images: Tensor, indices: Tensor, p: Predictions, path: Path) -> None:
    save_png(mistakes_figure(images, indices, p), path)


def mistakes_figure(images: Tensor, indices: Tensor, p: Predictions) -> Any:
    pics = to_hwc(images[indices])
    n = len(pics)
    cols = min(max(n, 1), 8)
    rows = max(1, -(-n // cols))
    fig = new_figure(1.9 * cols, 2.2 * rows + 0.5)
    probs = p.probs
    for i, idx in enumerate(indices.tolist()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(pics[i], interpolation="nearest")
        pred, conf = int(p.preds[idx]), 100 * float(probs[idx, int(p.preds[idx])])
        ax.set_title(f"true {CLASSES[int(p.labels[idx])]}\npred {CLASSES[pred]} ({conf:.0f} %)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if n == 0:
        fig.text(0.5, 0.5, "no mistakes on the test split", ha="center", va="center")
    fig.suptitle(f"The {n} most confident mistakes among {len(p.labels):,} test images "
                 "(true class, predicted class and its softmax confidence)", fontsize=SUPTITLE_SIZE)
    return fig


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
    save_png(confusion_figure(confusion, title), path)


def confusion_figure(confusion: np.ndarray, title: str) -> Any:
    """Row-normalised confusion matrix and per-class accuracy bars (as the report's run figure)."""
    fig = new_figure(12, 5.4)
    draw_confusion(fig, confusion, per_class_accuracy(confusion), CLASSES)
    fig.suptitle(title, fontsize=SUPTITLE_SIZE)
    return fig


def mistakes_summary(p: Predictions, indices: Tensor, confusion: np.ndarray) -> dict[str, Any]:
    probs = p.probs
    acc = per_class_accuracy(confusion)
    worst = int(np.argmin(acc))
    off = confusion.astype(np.float64).copy()
    np.fill_diagonal(off, -1)
    t, q = np.unravel_index(int(np.argmax(off)), off.shape)
    return {
        "test_images": len(p.labels), "test_acc": p.accuracy,
        "per_class_acc": {c: float(a) for c, a in zip(CLASSES, acc)},
        "worst_class": CLASSES[worst],
        "most_confused_pair": {"true": CLASSES[int(t)], "pred": CLASSES[int(q)], "count": int(confusion[t, q])},
        "confusion": confusion.tolist(),
        "confident_mistakes": [{"index": int(i), "true": CLASSES[int(p.labels[i])], "pred": CLASSES[int(p.preds[i])],
                                "confidence": float(probs[i].max())} for i in indices.tolist()],
    }


__all__ = ["Predictions", "confident_mistakes", "confusion_figure", "confusion_matrix", "mistakes_figure",
           "mistakes_summary", "per_class_accuracy", "plot_confusion", "plot_mistakes", "predict"]
