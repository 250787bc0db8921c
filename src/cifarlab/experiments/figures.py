"""Figures of sweeps and runs, as PNG bytes with a title and caption (sweeps write them and list them in their
manifest; the report draws those of a run directory without a manifest).

matplotlib's Agg canvas is used directly (no pyplot, no global backend switch): safe in headless runs, in Ray
workers and in processes that use another backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cifarlab.experiments.compare import RunRecord, VariantStats, aggregate, best_variant, load_runs
from cifarlab.io import atomic_write_bytes
from cifarlab.plotting import (
    SUPTITLE_SIZE,
    TITLE_SIZE,
    FigureOut,
    draw_confusion,
    epoch_axis,
    integer_ticks,
    new_figure,
    percent_axis,
    png_bytes,
    seeds_note,
)

CURVES = (("train_loss", "train loss"), ("train_acc", "train accuracy"), ("val_loss", "validation loss"),
          ("val_acc", "validation accuracy"))


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _finite(v: float) -> bool:
    return v is not None and math.isfinite(v)


def _epoch_means(runs: list[list[dict[str, float]]], key: str) -> dict[int, list[float]]:
    by_epoch: dict[int, list[float]] = {}
    for rows in runs:
        for row in rows:
            if _finite(row.get(key, math.nan)):
                by_epoch.setdefault(int(row["epoch"]), []).append(row[key])
    return by_epoch


def convergence_plot(variants: list[VariantStats], title_suffix: str = "") -> Any | None:
    """The convergence Figure: train/val loss and accuracy (%) per epoch, mean line per variant, band
    min..max over its seeds; None without any epochs."""
    curves = {v.variant: [r.epochs() for r in v.runs if r.summary] for v in variants}
    curves = {k: [rows for rows in c if rows] for k, c in curves.items()}
    if not any(curves.values()):
        return None
    fig = new_figure(11, 7.4)
    axes = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    last = 0
    for color, (variant, runs) in zip(_colors(len(curves)), curves.items()):
        for ax, (key, _) in zip(axes, CURVES):
            by_epoch = _epoch_means(runs, key)
            if not by_epoch:
                continue
            ep = sorted(by_epoch)
            last = max(last, ep[-1])
            mean = [sum(by_epoch[e]) / len(by_epoch[e]) for e in ep]
            ax.plot(ep, mean, color=color, lw=1.5, label=f"{variant} ({seeds_note(len(runs))})",
                    marker="o" if len(ep) < 4 else None, ms=3)
            if len(runs) > 1:
                ax.fill_between(ep, [min(by_epoch[e]) for e in ep], [max(by_epoch[e]) for e in ep],
                                color=color, alpha=0.18, lw=0)
    for ax, (key, label) in zip(axes, CURVES):
        ax.set_title(label, fontsize=TITLE_SIZE)
        epoch_axis(ax, last)
        if key.endswith("acc"):
            percent_axis(ax, label="accuracy (%)")
        else:
            ax.set_ylabel("cross-entropy loss")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    several = any(len(runs) > 1 for runs in curves.values())
    how = ": mean over seeds, band min..max over seeds" if several else ": one run per variant"
    fig.suptitle(f"Convergence{title_suffix}{how}", fontsize=SUPTITLE_SIZE)
    return fig


def convergence_figure(variants: list[VariantStats], title_suffix: str = "") -> FigureOut | None:
    fig = convergence_plot(variants, title_suffix)
    if fig is None:
        return None
    n_seeds = max(len([r for r in v.runs if r.summary]) for v in variants)
    held_out = "(validation: the held-out split carved from the training set)"
    if n_seeds <= 1:  # one run per variant: no mean, no band
        caption = f"Training and validation loss and accuracy per epoch {held_out}; one run (seed) per variant."
    else:
        caption = (f"Training and validation loss and accuracy per epoch {held_out}. Line: mean over seeds; shaded "
                   f"band: min..max over seeds (up to {n_seeds} seeds per variant).")
    return FigureOut("convergence", f"Convergence{title_suffix}", caption, png_bytes(fig))


def test_accuracy_plot(variants: list[VariantStats]) -> Any | None:
    """The test-accuracy Figure: a horizontal bar per variant on a 0..100 % axis (the whole scale: differences
    are not exaggerated), ± sample-std error bars only where there are >= 2 seeds; n beside each name."""
    shown = [v for v in variants if v.stats["test_acc"][2] > 0]
    if not shown:
        return None
    fig = new_figure(8, 1.4 + 0.45 * len(shown))
    ax = fig.add_subplot(1, 1, 1)
    means = [100 * v.stats["test_acc"][0] for v in shown]
    ax.barh(range(len(shown)), means, color=_colors(len(shown)), height=0.6)
    for i, v in enumerate(shown):
        mean, std, n = v.stats["test_acc"]
        if n > 1 and math.isfinite(std):  # one seed has no spread: no (zero-width) error bar at all
            ax.errorbar(100 * mean, i, xerr=100 * std, color="black", capsize=4, lw=1)
        ax.text(100 * mean + (100 * std if n > 1 and math.isfinite(std) else 0), i, f"  {100 * mean:.1f} %",
                va="center", fontsize=9)
    ax.set_yticks(range(len(shown)), [f"{v.variant} (n = {v.stats['test_acc'][2]})" for v in shown], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    percent_axis(ax, axis="x", fraction=False,
                 label="final test accuracy (%): mean over seeds, error bar ± sample std (none when n = 1)")
    ax.set_title("Test accuracy per variant", fontsize=TITLE_SIZE)
    ax.grid(axis="x", alpha=0.3)
    return fig


def test_accuracy_figure(variants: list[VariantStats]) -> FigureOut | None:
    fig = test_accuracy_plot(variants)
    if fig is None:
        return None
    caption = ("Final-epoch test accuracy per variant on the full 0-100 % scale: bar = mean over seeds, error bar "
               "= ± sample std (n-1; none when n = 1). The test set is evaluated once per run, after training.")
    return FigureOut("test_accuracy", "Test accuracy", caption, png_bytes(fig))


def lr_plot(variants: list[VariantStats]) -> Any | None:
    """LR of every optimizer step (steps.csv) for the first finished seed of each variant."""
    fig = new_figure(8, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for color, v in zip(_colors(len(variants)), variants):
        run = next((r for r in v.runs if r.summary), None)
        rows = run.steps() if run else []
        if rows:
            ax.plot([r["step"] for r in rows], [r["lr"] for r in rows], color=color, lw=1.2, label=v.variant)
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("optimizer step")
    integer_ticks(ax)
    ax.set_ylabel("learning rate")
    ax.set_title("Learning-rate schedule per variant (first seed)", fontsize=TITLE_SIZE)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def lr_figure(variants: list[VariantStats]) -> FigureOut | None:
    fig = lr_plot(variants)
    if fig is None:
        return None
    caption = "Learning rate at every optimizer step (from steps.csv), first seed of each variant."
    return FigureOut("lr", "Learning-rate schedules", caption, png_bytes(fig))


def confusion_figure(runs: list[RunRecord], label: str, why: str) -> FigureOut | None:
    """Confusion matrix summed over ``runs`` (row-normalised) and per-class test accuracy (mean over runs)."""
    import numpy as np

    from cifarlab.data import CLASSES

    ok = [r for r in runs if r.summary.get("confusion")]
    if not ok:
        return None
    conf = np.sum([np.asarray(r.summary["confusion"], dtype=float) for r in ok], axis=0)
    classes = list(ok[0].summary.get("per_class_test_acc", {}).keys()) or list(CLASSES)
    per_class = np.mean([[r.summary["per_class_test_acc"][c] for c in classes] for r in ok], axis=0)
    fig = new_figure(12, 5.4)
    draw_confusion(fig, conf, per_class, classes)
    fig.suptitle(f"Test confusion and per-class accuracy: {label}", fontsize=SUPTITLE_SIZE)
    caption = (f"Test confusion matrix (rows: true class, in % of it; summed over {len(ok)} seed"
               f"{'s' if len(ok) != 1 else ''}) and per-class test accuracy (mean over seeds) of {label}. {why}")
    return FigureOut("confusion", f"Confusion matrix and per-class accuracy: {label}", caption, png_bytes(fig))


def sweep_figures(sweep_dir: str | Path) -> list[FigureOut]:
    """All figures of a sweep: convergence, test accuracy, LR curves, confusion of the best variant."""
    variants = aggregate(load_runs(sweep_dir))
    figs = [convergence_figure(variants), test_accuracy_figure(variants), lr_figure(variants)]
    best = best_variant(variants)
    if best is not None:
        figs.append(confusion_figure([r for r in best.runs if r.ok], f"the best variant, {best.variant}",
                                     "Best = highest mean final validation accuracy (the test set chooses nothing)."))
    return [f for f in figs if f is not None]


def run_figures(run_dir: str | Path) -> list[FigureOut]:
    """Figures of a single run: its curves, LR schedule and confusion matrix."""
    import json

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    record = RunRecord(run_dir.name, int(summary.get("seed", 0) or 0), run_dir, summary.get("status", "?"),
                       summary.get("error"), summary)
    variants = aggregate([record])
    figs = [convergence_figure(variants, f": {run_dir.name}"), lr_figure(variants),
            confusion_figure([record], f"run {run_dir.name}", "")]
    return [f for f in figs if f is not None]


def write_sweep_figures(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write the sweep's figures as ``<sweep>/figures/<name>.png`` (atomic); return them as manifest items."""
    from cifarlab.manifest import figure

    items = []
    for fig in sweep_figures(sweep_dir):
        atomic_write_bytes(Path(sweep_dir) / "figures" / f"{fig.name}.png", fig.png)
        items.append(figure(f"figures/{fig.name}.png", fig.title, fig.caption))
    return items
