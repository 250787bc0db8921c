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
from cifarlab.plotting import FigureOut, draw_confusion, new_figure, png_bytes

CURVES = (("train_loss", "train loss"), ("train_acc", "train accuracy"), ("val_loss", "validation loss"),
          ("val_acc", "validation accuracy"))


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _finite(v: float) -> bool:
    return v is not None and math.isfinite(v)


def convergence_figure(variants: list[VariantStats], title_suffix: str = "") -> FigureOut | None:
    """Train/val loss and accuracy per epoch: mean line per variant, band min..max over its seeds."""
    from matplotlib.ticker import MaxNLocator

    curves = {v.variant: [r.epochs() for r in v.runs if r.summary] for v in variants}
    curves = {k: [rows for rows in c if rows] for k, c in curves.items()}
    if not any(curves.values()):
        return None
    fig = new_figure(11, 7)
    axes = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    for color, (variant, runs) in zip(_colors(len(curves)), curves.items()):
        if not runs:
            continue
        for ax, (key, label) in zip(axes, CURVES):
            by_epoch: dict[int, list[float]] = {}
            for rows in runs:
                for row in rows:
                    if _finite(row.get(key, math.nan)):
                        by_epoch.setdefault(int(row["epoch"]), []).append(row[key])
            if not by_epoch:
                continue
            ep = sorted(by_epoch)
            mean = [sum(by_epoch[e]) / len(by_epoch[e]) for e in ep]
            ax.plot(ep, mean, color=color, lw=1.5, label=variant, marker="o" if len(ep) < 4 else None, ms=3)
            if len(runs) > 1:
                ax.fill_between(ep, [min(by_epoch[e]) for e in ep], [max(by_epoch[e]) for e in ep],
                                color=color, alpha=0.18, lw=0)
            ax.set_title(label)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    n_seeds = max(len(r) for r in curves.values())
    caption = ("Training and validation loss and accuracy per epoch (validation: the held-out split carved from "
               "the training set). Line: mean over seeds; shaded band: min..max over seeds"
               f" (up to {n_seeds} seed{'s' if n_seeds != 1 else ''} per variant).")
    return FigureOut("convergence", f"Convergence{title_suffix}", caption, png_bytes(fig))


def test_accuracy_figure(variants: list[VariantStats]) -> FigureOut | None:
    """Bar per variant: mean final test accuracy with ± sample-std error bars; n in the tick label."""
    shown = [v for v in variants if v.stats["test_acc"][2] > 0]
    if not shown:
        return None
    fig = new_figure(max(5.0, 0.7 * len(shown) + 2), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    means = [100 * v.stats["test_acc"][0] for v in shown]
    stds = [0.0 if math.isnan(v.stats["test_acc"][1]) else 100 * v.stats["test_acc"][1] for v in shown]
    ax.bar(range(len(shown)), means, yerr=stds, capsize=4, color=_colors(len(shown)))
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([f"{v.variant}\n(n={v.stats['test_acc'][2]})" for v in shown], rotation=30, ha="right",
                       fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    lo = min(m - s for m, s in zip(means, stds))
    ax.set_ylim(max(0.0, lo - 5), min(100.0, max(m + s for m, s in zip(means, stds)) + 3))
    for i, m in enumerate(means):
        ax.text(i, m, f"{m:.1f}", ha="center", va="bottom", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    caption = ("Final-epoch test accuracy per variant: bar = mean over seeds, error bar = ± sample std (n-1; none "
               "when n = 1). The test set is evaluated once per run, after training.")
    return FigureOut("test_accuracy", "Test accuracy", caption, png_bytes(fig))


def lr_figure(variants: list[VariantStats]) -> FigureOut | None:
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
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
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
    fig = new_figure(12, 5)
    draw_confusion(fig, conf, per_class, classes)
    caption = (f"Test confusion matrix (rows: true class, normalised to 1; summed over {len(ok)} seed"
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
