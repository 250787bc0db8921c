"""Figure helpers shared by the report and the analyses: matplotlib's Agg canvas used directly (no pyplot, no
global backend switch: safe in headless runs, in Ray workers and in processes that use another backend)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class FigureOut:
    """A drawn figure: PNG bytes with a title and caption; ``name`` is a file stem, e.g. "convergence"."""

    name: str
    title: str
    caption: str
    png: bytes


def new_figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any, tight: bool = True) -> bytes:
    if tight:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def draw_confusion(fig: Any, confusion: np.ndarray, per_class: Sequence[float], classes: Sequence[str]) -> None:
    """Two panels on ``fig``: the row-normalised confusion matrix and per-class accuracy bars (fractions)."""
    norm = confusion / np.clip(confusion.sum(1, keepdims=True), 1, None)
    classes = list(classes)
    ax = fig.add_subplot(1, 2, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)))
    ax.set_yticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.barh(range(len(classes)), [100 * a for a in per_class], color="#4c72b0")
    ax2.set_yticks(range(len(classes)))
    ax2.set_yticklabels(classes, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("test accuracy (%)")
    ax2.set_xlim(0, 100)
    for i, a in enumerate(per_class):
        ax2.text(100 * a, i, f" {100 * a:.1f}", va="center", fontsize=7)
    ax2.grid(axis="x", alpha=0.3)


__all__ = ["draw_confusion", "new_figure", "png_bytes"]
