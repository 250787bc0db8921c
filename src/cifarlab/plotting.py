"""Figure helpers shared by the report and the analyses: matplotlib's Agg canvas used directly (no pyplot, no
global backend switch: safe in headless runs, in Ray workers and in processes that use another backend).

The house style lives here: figures are built by a function that returns the Figure (so tests can check its
layout), laid out by matplotlib's constrained layout (titles, labels and legends make room for each other),
accuracies are drawn in %, epoch and trial axes get integer ticks, and ``save`` writes the PNG atomically."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class FigureOut:
    """A drawn figure: PNG bytes with a title and caption; ``name`` is a file stem, e.g. "convergence"."""

    name: str
    title: str
    caption: str
    png: bytes


TITLE_SIZE = 11
SUPTITLE_SIZE = 12


def new_figure(w: float, h: float, layout: str | None = "constrained") -> Any:
    """A Figure on its own Agg canvas; ``layout=None`` for figures placed by hand (3-D axes, free text)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any, tight: bool = True, dpi: int = 100) -> bytes:
    """PNG of ``fig``; a figure without a layout engine gets tight_layout when ``tight``."""
    if tight and fig.get_layout_engine() is None:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save(fig: Any, path: str | Path, tight: bool = True, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (the old file or the new one, never half)."""
    from cifarlab.io import atomic_write_bytes

    atomic_write_bytes(path, png_bytes(fig, tight, dpi))
    return Path(path)


def integer_ticks(ax: Any, axis: str = "x") -> None:
    """Whole-number ticks only (epochs, trials): a 2-epoch run gets 1 and 2, not 0.945 ... 1.050."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def epoch_axis(ax: Any, last: int, label: str = "epoch") -> None:
    """An epoch axis: every epoch ticked when there are few (a lone epoch still gets the tick "1"), else
    whole numbers only."""
    ax.set_xlabel(label)
    if 0 < last <= 12:
        ax.set_xticks(range(1, last + 1))
        ax.set_xlim(0.5, last + 0.5)
    else:
        integer_ticks(ax)


def percent_axis(ax: Any, axis: str = "y", fraction: bool = True, label: str | None = None) -> None:
    """Tick labels in % (``fraction``: the data are 0..1, as in the summaries; else already 0..100)."""
    from matplotlib.ticker import PercentFormatter

    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_formatter(PercentFormatter(xmax=1.0 if fraction else 100.0, decimals=None))
    if label is not None:
        a.set_label_text(label)


def seeds_note(n: int) -> str:
    """"n = 3 seeds" / "n = 1 seed": said wherever a spread is (or cannot be) shown."""
    return f"n = {n} seed{'s' if n != 1 else ''}"


def draw_confusion(fig: Any, confusion: np.ndarray, per_class: Sequence[float], classes: Sequence[str]) -> None:
    """Two panels on ``fig``: the row-normalised confusion matrix in % of each true class, and per-class
    accuracy bars (``per_class`` given as fractions)."""
    norm = 100 * confusion / np.clip(confusion.sum(1, keepdims=True), 1, None)
    classes = list(classes)
    ax = fig.add_subplot(1, 2, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(classes)))
    ax.set_yticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=90, fontsize=8)  # upright boxes: neighbours never touch
    ax.set_yticklabels(classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix (% of the true class; rows sum to 100)", fontsize=TITLE_SIZE)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if norm[i, j] > 50 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="% of the true class")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.barh(range(len(classes)), [100 * a for a in per_class], color="#4c72b0")
    ax2.set_yticks(range(len(classes)))
    ax2.set_yticklabels(classes, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("test accuracy (%)")
    ax2.set_xlim(0, 100)
    ax2.set_title("per-class test accuracy", fontsize=TITLE_SIZE)
    for i, a in enumerate(per_class):
        inside = a > 0.85  # a high bar carries its number inside: no label past the 100 % edge
        ax2.text(100 * a, i, f" {100 * a:.1f} ", va="center", ha="right" if inside else "left", fontsize=7,
                 color="white" if inside else "black")
    ax2.grid(axis="x", alpha=0.3)


__all__ = ["SUPTITLE_SIZE", "TITLE_SIZE", "FigureOut", "draw_confusion", "epoch_axis", "integer_ticks", "new_figure",
           "percent_axis", "png_bytes", "save", "seeds_note"]
