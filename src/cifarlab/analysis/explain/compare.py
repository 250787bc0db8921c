"""``cifarlab explain --compare RUN_A RUN_B``: two runs' loss surfaces side by side on the same axes and scale
(e.g. VGG-A vs VGG-A + BN, the comparison of Li et al. 2018 Fig. 1 / Santurkar et al. 2018).

Both surfaces use the same coordinates (``--span``, ``--grid``, ``--line``), the same seed for the directions
and the same number of training batches drawn with the same seed; each is evaluated on its own run's training
split and normalisation. Directions are drawn weight tensor by weight tensor in order, so when the two models'
conv/linear weights have the same shapes in the same order (VGG-A and VGG-A + BN do: BN adds only 1-D
parameters) both get IDENTICAL raw random directions, each then filter-normalised to its own weights;
otherwise each model gets its own draws from the same seed (stated in compare.json and the figure).
The colour scale and z-range are shared: [min of both, min(10, max of both)] unless ``--zmax``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cifarlab.analysis.explain.explain import compute_surfaces
from cifarlab.analysis.explain.plots import fmt, new_figure, save_npz, save_png
from cifarlab.analysis.explain.runs import load_run, load_splits, training_batches
from cifarlab.analysis.explain.sections import write_compare_manifest
from cifarlab.analysis.explain.settings import ExplainSettings
from cifarlab.analysis.explain.surface import display_range, draw_contour, draw_surface3d, weight_shapes
from cifarlab.data import CifarArrays
from cifarlab.errors import ConfigError
from cifarlab.io import atomic_write_json, json_safe

COLORS = ("tab:green", "tab:red")  # the bn-study colours: first run green, second red



def default_compare_dir(run_a: Path, run_b: Path) -> Path:
    return run_a.parent / f"explain-compare-{run_a.name}-vs-{run_b.name}"


def compare_runs(run_a: str | Path, run_b: str | Path, settings: ExplainSettings | None = None,
                 out: str | Path | None = None, *, data: CifarArrays | None = None,
                 log: Callable[[str], None] | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Compute both runs' 1-D and 2-D surfaces and write ``compare.json``, ``compare_surfaces.npz`` and the
    figures into ``out`` (default: ``explain-compare-A-vs-B`` next to RUN_A). Returns compare.json's content."""
    s = (settings or ExplainSettings()).validate()
    say = log or (lambda _line: None)
    t0 = time.perf_counter()
    runs = [load_run(r, s.checkpoint, s.device) for r in (run_a, run_b)]
    if runs[0].run_dir.resolve() == runs[1].run_dir.resolve():
        raise ConfigError(f"--compare: give two different runs (got '{run_a}' twice)")
    folder = Path(out) if out is not None else default_compare_dir(runs[0].run_dir, runs[1].run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if data is None:  # one load for both (a run's own data.dir unless --data-dir)
        from cifarlab.data import load_cifar10

        cfg = runs[0].cfg
        data = load_cifar10(s.data_dir if s.data_dir is not None else cfg.data.dir, download=cfg.data.download)
    same = weight_shapes(runs[0].model) == weight_shapes(runs[1].model)
    directions = ("identical raw random directions (the conv/linear weight shapes match in order), each "
                  "filter-normalised to its own weights" if same else
                  "per-model random directions from the same seed (the conv/linear weight shapes differ)")
    labels = [f"{r.cfg.model.name} ({r.name})" for r in runs]
    results = []
    for run, label in zip(runs, labels):
        t = time.perf_counter()
        splits = load_splits(run.cfg, None, data)
        batches = training_batches(splits, run.augment, s.batches, s.batch_size, s.seed, run.device)
        r = compute_surfaces(run, batches, s, progress)
        r["images"] = sum(len(y) for _, y in batches)
        r["seconds"] = round(time.perf_counter() - t, 2)
        results.append(r)
        g = r["grid_stats"]
        say(f"  {label}: loss at centre {fmt(g['loss_centre'])}, 2-D min/max {fmt(g['loss_min'])}/"
            f"{fmt(g['loss_max'])}  ({r['seconds']:.1f}s)")

    vmin, vmax = display_range([r["grid_loss"] for r in results] + [r["line_loss"] for r in results], s.zmax)
    a, b = results
    save_npz(folder / "compare_surfaces.npz", line_alphas=a["line_alphas"], alphas=a["alphas"], betas=a["betas"],
             line_loss_a=a["line_loss"], line_loss_b=b["line_loss"], line_acc_a=a["line_acc"],
             line_acc_b=b["line_acc"], grid_loss_a=a["grid_loss"], grid_loss_b=b["grid_loss"],
             grid_acc_a=a["grid_acc"], grid_acc_b=b["grid_acc"], display_range=np.array([vmin, vmax]))
    _plot(folder, labels, results, vmin, vmax, directions)
    summary = {
        "kind": "cifarlab-explain-compare",
        "runs": [r.describe() for r in runs], "labels": labels, "directions": directions,
        "same_direction_draws": same, "display_range": [vmin, vmax], "settings": s.to_dict(),
        "per_run": [{"label": lab, "images": r["images"], "seconds": r["seconds"],
                     "direction_cosine": r["direction_cosine"], "line": r["line_stats"], "grid": r["grid_stats"]}
                    for lab, r in zip(labels, results)],
        "total_s": round(time.perf_counter() - t0, 2),
    }
    summary = json_safe(summary)
    atomic_write_json(folder / "compare.json", summary)
    write_compare_manifest(folder, summary)
    return summary


def _plot(folder: Path, labels: list[str], results: list[dict[str, Any]], vmin: float, vmax: float,
          directions: str) -> None:
    fig = new_figure(8, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    for color, label, r in zip(COLORS, labels, results):
        ax.plot(r["line_alphas"], r["line_loss"], color=color, lw=1.6, marker="o", ms=2.5, label=label)
    ax.axvline(0.0, color="0.6", lw=0.8, ls=":")
    ax.set_ylim(vmin, vmax + 0.02 * (vmax - vmin))
    ax.set_xlabel("α (filter-normalised direction)")
    ax.set_ylabel("cross-entropy (eval mode, training batches)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("1-D loss, same direction seed and scale", fontsize=9)
    save_png(fig, folder / "compare_1d.png")

    fig = new_figure(12, 5.4)
    filled = None
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for ax, label, r in zip(axes, labels, results):
        filled = draw_contour(ax, r["alphas"], r["betas"], r["grid_loss"], vmin, vmax)
        ax.set_title(label, fontsize=9)
    fig.colorbar(filled, ax=axes, label=f"loss (shared scale {vmin:.2f}..{vmax:.2f})", fraction=0.03)
    fig.suptitle(f"2-D loss surfaces: {directions}", fontsize=8)
    save_png(fig, folder / "compare_2d_contour.png", tight=False)

    fig = new_figure(13, 5.6)
    for i, (label, r) in enumerate(zip(labels, results)):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        draw_surface3d(ax, r["alphas"], r["betas"], r["grid_loss"], vmin, vmax)
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"same axes and z-range ({vmin:.2f}..{vmax:.2f})", fontsize=9)
    save_png(fig, folder / "compare_2d_3d.png", tight=False)


__all__ = ["compare_runs", "default_compare_dir"]
