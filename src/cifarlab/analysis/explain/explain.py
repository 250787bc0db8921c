"""``explain_run``: every "what did the model learn" output of one run, written into ``RUN_DIR/explain/``.

Parts (``ExplainSettings.parts``), in the order they run:

* ``structure``: layer table (layer, type, output shape, params) as Markdown, CSV and figure;
* ``filters``: first-layer filters as an RGB grid, deeper filters summarised, feature maps of chosen layers;
* ``gradcam``: attribution overlays (Captum Grad-CAM by default; saliency or integrated gradients) for N test
  images with true/predicted labels and confidence;
* ``mistakes``: predictions on the whole test split: most confident mistakes, confusion matrix, per-class
  accuracy;
* ``surface``: Li et al. (2018) 1-D and 2-D loss surfaces along filter-normalised random directions;
* ``interp``: loss along the straight line from another point (the run's initial weights by default) to the
  trained weights.

Test images come from the run's test split; the surface and interpolation batches from its TRAINING split.
``explain.json`` holds the numbers (kept across partial re-runs: ``--parts`` only replaces its parts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifarlab.analysis.explain.attribution import METHOD_NAMES, attribute, plot_attributions
from cifarlab.analysis.explain.filters import (
    plot_deep_filter_images,
    plot_deep_filters,
    plot_feature_maps,
    plot_first_layer,
)
from cifarlab.analysis.explain.layers import default_feature_layers, default_target_layer, resolve_layer
from cifarlab.analysis.explain.mistakes import (
    confident_mistakes,
    confusion_matrix,
    mistakes_summary,
    plot_confusion,
    plot_mistakes,
    predict,
)
from cifarlab.analysis.explain.plots import fmt, new_figure, save_npz, save_png
from cifarlab.analysis.explain.runs import (
    LoadedRun,
    load_endpoint,
    load_run,
    load_splits,
    sample_indices,
    training_batches,
)
from cifarlab.analysis.explain.sections import write_explain_manifest
from cifarlab.analysis.explain.settings import ExplainSettings
from cifarlab.analysis.explain.structure import write_structure
from cifarlab.analysis.explain.surface import (
    bn_stat_keys,
    coordinates,
    direction_cosine,
    display_range,
    draw_contour,
    draw_line,
    draw_surface3d,
    filter_normalized_direction,
    grid_stats,
    interpolate,
    interpolation_alphas,
    interpolation_stats,
    line_stats,
    loss_grid,
    loss_line,
)
from cifarlab.data import CLASSES, CifarArrays, Splits
from cifarlab.io import atomic_write_json, json_safe
from cifarlab.plotting import SUPTITLE_SIZE

Log = Callable[[str], None]

# (file in RUN_DIR/explain, title, caption): the order and words of the report's explain figures.


def _log_default(_line: str) -> None:
    return None


def _validate_layers(run: LoadedRun, s: ExplainSettings) -> tuple[str | None, list[str] | None]:
    """Check layer names before any data is loaded (a typo fails in a second, with the valid names)."""
    model = run.model
    target = None
    if s.layer is not None:
        resolve_layer(model, s.layer)
        target = s.layer
    elif "gradcam" in s.parts and s.method == "gradcam":
        target = default_target_layer(model)
    features = None
    if "filters" in s.parts:
        features = list(s.feature_layers) if s.feature_layers else default_feature_layers(model)
        for name in features:
            resolve_layer(model, name, flag="--feature-layers")
    return target, features


def _part_filters(run: LoadedRun, splits: Splits, s: ExplainSettings, out: Path, features: list[str]) -> dict:
    first = plot_first_layer(run.model, out / "filters_first_layer.png")
    deep = plot_deep_filters(run.model, out / "filters_deep.png")
    deep["images"] = plot_deep_filter_images(run.model, out / "filters_deep_images.png")
    idx = sample_indices(len(splits.test_y), s.feature_images, s.seed, stream=2)
    images, labels = splits.test_x[idx], splits.test_y[idx]
    maps = plot_feature_maps(run.model, run.augment.eval(images.to(run.device)), images, labels, features,
                             out / "feature_maps.png") if features else {}
    return {"first_layer": first, "deeper": deep, "feature_layers": maps, "feature_images": idx.tolist()}


def _part_gradcam(run: LoadedRun, splits: Splits, s: ExplainSettings, out: Path, layer: str | None) -> dict:
    idx = sample_indices(len(splits.test_y), s.images, s.seed, stream=2)
    images, labels = splits.test_x[idx], splits.test_y[idx]
    x = run.augment.eval(images.to(run.device))
    with torch.no_grad():
        probs = run.model(x).float().softmax(1).cpu()
    conf, preds = probs.max(1)
    target = preds if s.target == "pred" else labels
    maps = attribute(run.model, x, target, s.method, layer, ig_steps=s.ig_steps).cpu()
    save_npz(out / f"attribution_{s.method}.npz", maps=maps.numpy(), indices=idx.numpy(), labels=labels.numpy(),
             preds=preds.numpy(), confidence=conf.numpy(), target=target.numpy())
    plot_attributions(images, maps, labels, preds, conf, out / f"attribution_{s.method}.png", s.method, layer,
                      s.target)
    return {"method": s.method, "method_name": METHOD_NAMES[s.method], "layer": layer if s.method == "gradcam"
            else None, "target": s.target, "images": idx.tolist(), "map_shape": list(maps.shape),
            "correct": int((preds == labels).sum())}


def _part_mistakes(run: LoadedRun, splits: Splits, s: ExplainSettings, out: Path) -> dict:
    p = predict(run.model, splits.test_x, splits.test_y, run.augment, run.cfg.train.eval_batch_size, run.device)
    idx = confident_mistakes(p.logits, p.labels, s.mistakes)
    conf = confusion_matrix(p.preds, p.labels)
    plot_mistakes(splits.test_x, idx, p, out / "mistakes.png")
    plot_confusion(conf, out / "confusion.png", f"{run.name}: test accuracy {100 * p.accuracy:.2f} % on "
                   f"{len(p.labels):,} images ({'averaged' if run.averaged else run.checkpoint.stem} weights)")
    return mistakes_summary(p, idx, conf)


def _directions(model: torch.nn.Module, s: ExplainSettings) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(s.seed)
    dx = filter_normalized_direction(model, gen, s.include_bn_stats)
    dy = filter_normalized_direction(model, gen, s.include_bn_stats)
    return dx, dy


def compute_surfaces(run: LoadedRun, batches: list, s: ExplainSettings, progress: bool | None = None) -> dict[str, Any]:
    """1-D line (direction 1) and 2-D grid (directions 1 and 2) of one run: arrays and their numbers.
    The two directions are the first two draws of a generator seeded with ``s.seed``."""
    dx, dy = _directions(run.model, s)
    _, variances = bn_stat_keys(run.model)
    line = coordinates(s.line, s.span)
    axis = coordinates(s.grid, s.span)
    l1, a1 = loss_line(run.model, dx, line, batches, variances, progress)
    l2, a2 = loss_grid(run.model, dx, dy, axis, axis, batches, variances, progress)
    return {"line_alphas": line, "line_loss": l1, "line_acc": a1, "alphas": axis, "betas": axis, "grid_loss": l2,
            "grid_acc": a2, "line_stats": line_stats(line, l1, s.span),
            "grid_stats": grid_stats(axis, axis, l2, s.span), "direction_cosine": direction_cosine(dx, dy)}


def _part_surface(run: LoadedRun, splits: Splits, s: ExplainSettings, out: Path, progress: bool | None) -> dict:
    batches = training_batches(splits, run.augment, s.batches, s.batch_size, s.seed, run.device)
    r = compute_surfaces(run, batches, s, progress)
    save_npz(out / "surface_1d.npz", alphas=r["line_alphas"], loss=r["line_loss"], acc=r["line_acc"])
    save_npz(out / "surface_2d.npz", alphas=r["alphas"], betas=r["betas"], loss=r["grid_loss"], acc=r["grid_acc"])
    vmin, vmax = display_range([r["grid_loss"]], s.zmax)
    line_vmin, line_vmax = display_range([r["line_loss"]], s.zmax)
    images = sum(len(y) for _, y in batches)
    where = f"{len(batches)} training batch{'es' if len(batches) != 1 else ''}, {images} images, eval mode"

    fig = new_figure(7, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    draw_line(ax, r["line_alphas"], r["line_loss"], r["line_acc"], ylim=(line_vmin, line_vmax + 0.02 * (line_vmax
              - line_vmin)))
    ax.set_title(f"{run.name}: 1-D loss ({where})", fontsize=9)
    save_png(fig, out / "surface_1d.png")

    fig = new_figure(6.4, 5.4)
    ax = fig.add_subplot(1, 1, 1)
    filled = draw_contour(ax, r["alphas"], r["betas"], r["grid_loss"], vmin, vmax)
    fig.colorbar(filled, ax=ax, label="loss", fraction=0.046)
    ax.set_title(f"{run.name}: 2-D loss surface\n({where})", fontsize=9)
    save_png(fig, out / "surface_2d_contour.png")

    save_png(surface3d_figure(f"{run.name}: 2-D loss surface", r["alphas"], r["betas"], r["grid_loss"], vmin,
                              vmax), out / "surface_2d_3d.png", tight=False)
    return {"batches": len(batches), "images": images, "line_points": s.line, "grid_points": s.grid,
            "span": s.span, "include_bn_stats": s.include_bn_stats, "direction_cosine": r["direction_cosine"],
            "display_range": [vmin, vmax], "line": r["line_stats"], "grid": r["grid_stats"]}


def surface3d_figure(title: str, alphas: Any, betas: Any, losses: Any, vmin: float, vmax: float) -> Any:
    """The 3-D surface, placed by hand (3-D axes and constrained layout leave wide margins)."""
    fig = new_figure(7.5, 6.4, layout=None)
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    fig.subplots_adjust(left=0.0, right=0.95, bottom=0.02, top=0.98)
    draw_surface3d(ax, alphas, betas, losses, vmin, vmax)
    ax.set_box_aspect(None, zoom=0.92)
    fig.suptitle(f"{title}\n(clipped at {vmax:.3g}; floor: the same surface as contours)", fontsize=SUPTITLE_SIZE,
                 y=0.97)
    return fig


def _part_interp(run: LoadedRun, splits: Splits, s: ExplainSettings, out: Path,
                 endpoint: tuple[dict, str], progress: bool | None) -> dict:
    start, what = endpoint
    batches = training_batches(splits, run.augment, s.batches, s.batch_size, s.seed, run.device)
    alphas = interpolation_alphas(s.interp_points)
    final = {k: v.detach() for k, v in run.model.state_dict().items()}
    losses, accs = interpolate(run.model, start, final, alphas, batches, progress)
    save_npz(out / "interpolation.npz", alphas=alphas, loss=losses, acc=accs)
    stats = interpolation_stats(alphas, losses)
    fig = new_figure(7, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = display_range([losses], s.zmax)
    draw_line(ax, alphas, losses, accs, ylim=(lo, hi + 0.02 * (hi - lo)))
    ax.axvline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("α: 0 = start, 1 = trained weights")
    start_name = "init" if s.interpolate == "init" else Path(s.interpolate).name
    ax.set_title(f"{run.name}: {start_name} → trained (barrier {fmt(stats['barrier'], 3)})", fontsize=9)
    save_png(fig, out / "interpolation.png")
    return {"start": what, "points": len(alphas), "batches": len(batches), **stats}


def _read_previous(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


@dataclass
class PartContext:
    """What every part of `cifarlab explain` may use: the rebuilt run, its splits, settings and output folder."""

    run: Any
    splits: Any
    s: ExplainSettings
    out: Path
    target_layer: Any
    features: Any
    endpoint: Any
    progress: bool | None


def _run_structure(c: PartContext) -> tuple[dict[str, Any], str]:
    result = write_structure(c.run.cfg.model.name, dict(c.run.cfg.model.options), c.out)
    return result, f"{result['params']:,} params, {result['layers']} layers"


def _run_filters(c: PartContext) -> tuple[dict[str, Any], str]:
    result = _part_filters(c.run, c.splits, c.s, c.out, c.features)
    return result, f"first layer {result['first_layer']['layer']}, feature maps of {', '.join(c.features)}"


def _run_gradcam(c: PartContext) -> tuple[dict[str, Any], str]:
    result = _part_gradcam(c.run, c.splits, c.s, c.out, c.target_layer)
    return result, (f"{METHOD_NAMES[c.s.method]} on {c.s.images} test images"
                    + (f" at layer {c.target_layer}" if c.s.method == "gradcam" else ""))


def _run_mistakes(c: PartContext) -> tuple[dict[str, Any], str]:
    result = _part_mistakes(c.run, c.splits, c.s, c.out)
    return result, (f"test accuracy {100 * result['test_acc']:.2f} %, worst class {result['worst_class']}, "
                    f"{len(result['confident_mistakes'])} confident mistakes")


def _run_surface(c: PartContext) -> tuple[dict[str, Any], str]:
    result = _part_surface(c.run, c.splits, c.s, c.out, c.progress)
    g, one = result["grid"], result["line"]
    return result, (f"loss at centre {fmt(g['loss_centre'])}, 2-D min/max {fmt(g['loss_min'])}/"
                    f"{fmt(g['loss_max'])}, 1-D curvature {fmt(one['curvature_1d'], 3)}, max rise within "
                    f"r={c.s.span / 2:g}: {fmt(g['max_rise_half_span'])}")


def _run_interp(c: PartContext) -> tuple[dict[str, Any], str]:
    result = _part_interp(c.run, c.splits, c.s, c.out, c.endpoint, c.progress)
    return result, (f"loss {fmt(result['loss_at_0'])} (start) -> {fmt(result['loss_at_1'])} (trained), barrier "
                    f"{fmt(result['barrier'])} at α={fmt(result['barrier_alpha'], 2)}; start: {result['start']}")


# The parts of `cifarlab explain`, by name: each returns its JSON result and the one line it logs.
PART_RUNNERS: dict[str, Callable[[PartContext], tuple[dict[str, Any], str]]] = {
    "structure": _run_structure, "filters": _run_filters, "gradcam": _run_gradcam, "mistakes": _run_mistakes,
    "surface": _run_surface, "interp": _run_interp,
}


def explain_run(run_dir: str | Path, settings: ExplainSettings | None = None, *, data: CifarArrays | None = None,
                log: Log | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Write ``RUN_DIR/explain/`` (figures, NPZ arrays, ``structure.md``/``.csv`` and ``explain.json``).

    ``data``: CIFAR-shaped arrays to use instead of loading CIFAR-10 (tests); ``log``: one line per finished
    part; ``progress``: progress bars (None: only on a terminal). Returns the content of ``explain.json``.
    Raises CifarlabError for user mistakes (missing run or checkpoint, unknown layer, bad settings).
    """
    s = (settings or ExplainSettings()).validate()
    say = log or _log_default
    t_start = time.perf_counter()
    run = load_run(run_dir, s.checkpoint, s.device)
    target_layer, features = _validate_layers(run, s)
    endpoint = load_endpoint(s.interpolate, run) if "interp" in s.parts else None
    out = run.run_dir / "explain"
    out.mkdir(parents=True, exist_ok=True)
    needs_data = any(p in s.parts for p in ("filters", "gradcam", "mistakes", "surface", "interp"))
    splits = load_splits(run.cfg, s.data_dir, data) if needs_data else None

    summary = _read_previous(out / "explain.json")
    summary.update({"kind": "cifarlab-explain", **run.describe(), "settings": s.to_dict()})
    if splits is not None:
        summary["data"] = {"train_images": len(splits.train_y), "test_images": len(splits.test_y)}
    timings = dict(summary.get("timings_s") or {})
    ctx = PartContext(run, splits, s, out, target_layer, features, endpoint, progress)
    for part in s.parts:
        t0 = time.perf_counter()
        result, line = PART_RUNNERS[part](ctx)
        timings[part] = round(time.perf_counter() - t0, 2)
        summary[part] = result
        say(f"  {part:<9s} {timings[part]:6.1f}s  {line}")
    summary["timings_s"] = timings
    summary["total_s"] = round(time.perf_counter() - t_start, 2)
    summary["classes"] = list(CLASSES)
    summary = json_safe(summary)
    atomic_write_json(out / "explain.json", summary)
    write_explain_manifest(out, run.run_dir, summary)
    return summary


__all__ = ["compute_surfaces", "explain_run"]

