"""The ``manifest.json`` of explain folders: what ``cifarlab report`` shows of ``RUN_DIR/explain/`` (added to
the run's section) and of an ``explain --compare`` folder (a section of its own)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from cifarlab.manifest import figure, table, text, write_manifest

# (file in the folder, title, caption), in report order
FIGURES: list[tuple[str, str, str]] = [
    ("structure.png", "Network structure", "Trainable parameters of every layer (log scale) with its output shape "
     "C x H x W for one 32x32 image; the full table is explain/structure.md."),
    ("filters_first_layer.png", "First-layer filters", "Every filter of the first convolution as a small RGB image, "
     "each scaled to its own min..max: colour and edge detectors appear as the model trains."),
    ("filters_deep.png", "Deeper filters", "Per-filter L2 norms of every later convolution (box: quartiles, "
     "whiskers: range without outliers) and mean |weight| per kernel tap."),
    ("filters_deep_images.png", "Deeper filters as images", "For up to 8 later k x k convolutions (one row "
     "each), the first 16 filters drawn as their kernel on the input channel each weighs most; red positive, blue "
     "negative, each filter scaled to its largest |weight|."),
    ("feature_maps.png", "Feature maps", "For a few test images, the most active channels at the end of each "
     "resolution stage (each tile scaled to its own range)."),
    ("attribution_gradcam.png", "Grad-CAM", "Captum LayerGradCam (ReLU on the map, bilinear upsampling to 32x32) "
     "for the predicted class of random test images; red titles are mistakes."),
    ("attribution_saliency.png", "Saliency", "Captum Saliency: |d logit / d pixel|, max over colour channels."),
    ("attribution_ig.png", "Integrated gradients", "Captum IntegratedGradients from the data-set mean image: "
     "|attribution| summed over colour channels."),
    ("mistakes.png", "Most confident mistakes", "Test images the model gets wrong with the highest confidence."),
    ("confusion.png", "Confusion matrix and per-class accuracy of the explained weights", "On the test split, "
     "recomputed by explain from the explained checkpoint (no test-time augmentation): rows are true classes, "
     "each in % of its images."),
    ("surface_1d.png", "Loss along a random direction (1-D)", "Li et al. 2018: cross-entropy (eval mode, training "
     "batches) at w + α d with d filter-normalised; α = 0 is the trained model."),
    ("surface_2d_contour.png", "Loss surface (2-D contour)", "Loss at w + α d1 + β d2 over two filter-normalised "
     "random directions; the star is the trained model; drawn values clipped at the colour-scale maximum."),
    ("surface_2d_3d.png", "Loss surface (3-D)", "The same 2-D surface as a 3-D plot (same clipping; drawn on a finer "
     "bilinear display grid, its contours on the floor)."),
    ("interpolation.png", "Linear interpolation", "Loss and accuracy on training batches along "
     "(1 - α) θ_start + α θ_trained (Goodfellow et al. 2015); α = 0 the start (default: the run's seeded init)."),
]

COMPARE_FIGURES: list[tuple[str, str, str]] = [
    ("compare_1d.png", "1-D loss of both runs", "Li et al. 2018: loss along one filter-normalised random direction "
     "of each run, on the same axes (α = 0: trained weights)."),
    ("compare_2d_contour.png", "2-D loss surfaces side by side", "Same coordinates, same contour levels and colour "
     "scale for both runs; values above the scale maximum are clipped."),
    ("compare_2d_3d.png", "3-D loss surfaces side by side", "The same surfaces as 3-D plots with the same z-range."),
]


def _num(v: Any, digits: int = 4) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.{digits}f}"


def explain_rows(e: dict[str, Any]) -> list[list[str]]:
    """The numbers of an ``explain.json`` as (metric, value) rows."""
    def get(*keys: str) -> Any:
        v: Any = e
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    num = _num
    rows = [["explained weights", f"{Path(str(e.get('checkpoint', '-'))).name}, epoch {e.get('epoch', '-')}"
             + (" (EMA/SWA average)" if e.get("averaged") else "")]]
    if get("mistakes", "test_acc") is not None:
        rows += [["test accuracy (%), no TTA", num(100 * get("mistakes", "test_acc"), 2)],
                 ["worst class", str(get("mistakes", "worst_class"))]]
    if get("gradcam", "method_name"):
        layer = get("gradcam", "layer")
        rows.append(["attribution", get("gradcam", "method_name") + (f" at layer {layer}" if layer else "")])
    if isinstance(get("surface", "grid"), dict):
        rows += [["loss at the trained weights (training batches)", num(get("surface", "grid", "loss_centre"))],
                 ["2-D surface min / max", f"{num(get('surface', 'grid', 'loss_min'))} / "
                  f"{num(get('surface', 'grid', 'loss_max'))}"],
                 ["max loss rise within half the span (2-D)", num(get("surface", "grid", "max_rise_half_span"))],
                 ["1-D curvature (quadratic fit)", num(get("surface", "line", "curvature_1d"), 3)]]
    if get("interp", "loss_at_0") is not None:
        rows += [["interpolation: loss at start / trained", f"{num(get('interp', 'loss_at_0'))} / "
                  f"{num(get('interp', 'loss_at_1'))}"],
                 ["interpolation barrier (at α)", f"{num(get('interp', 'barrier'))} "
                  f"({num(get('interp', 'barrier_alpha'), 2)})"]]
    return rows


def write_explain_manifest(folder: Path, run_dir: Path, e: dict[str, Any]) -> Path:
    """Numbers, structure table and figures of ``RUN_DIR/explain/``, added to the run's section of the report."""
    items = [table("What the model learned (cifarlab explain)", "Numbers from explain/explain.json: surfaces and "
                   "interpolation on fixed training batches in eval mode (Li et al. 2018 filter-normalised "
                   "directions); accuracy on the test split.", ["metric", "value"], explain_rows(e), numeric=False)]
    structure = folder / "structure.csv"
    if structure.is_file():
        rows = list(csv.reader(structure.read_text().splitlines()))
        if 1 < len(rows) <= 41:
            items.append(table(f"Structure of {e.get('model', '?')}", "Every layer as called in the forward pass: "
                               "output shape for one image, trainable parameters.", rows[0],
                               [[*r[:3], f"{int(r[3]):,}"] for r in rows[1:]], numeric=False))
    # explain's confusion matrix repeats the run's own unless its predictions differ (other weights, or the run
    # used test-time augmentation, which explain does not): then both are shown.
    summary = run_dir / "summary.json"
    run_confusion = json.loads(summary.read_text()).get("confusion") if summary.is_file() else None
    repeated = run_confusion is not None and (e.get("mistakes") or {}).get("confusion") == run_confusion
    items += [figure(name, f"{title}: {run_dir.name}", caption) for name, title, caption in FIGURES
              if (folder / name).is_file() and not (repeated and name == "confusion.png")]
    return write_manifest(folder, f"What {run_dir.name} learned", items, extends="..")


def write_compare_manifest(folder: Path, c: dict[str, Any]) -> Path:
    """The report section of an ``explain --compare`` folder."""
    lo, hi = (c.get("display_range") or [None, None])[:2]
    items = [text(f"Directions: {c.get('directions', '?')}. Shared scale for both runs: {_num(lo)} .. {_num(hi)}.")]
    rows = [[r["label"], _num(r["grid"].get("loss_centre")), _num(r["grid"].get("loss_max")),
             _num(r["grid"].get("max_rise_half_span")), _num(r["line"].get("curvature_1d"))]
            for r in c.get("per_run", [])]
    items.append(table("Surface numbers", "Loss at the trained weights, 2-D maximum, largest rise within half the "
                       "span, 1-D curvature; same coordinates, seed and batch count for both runs.",
                       ["run", "loss at centre", "2-D max", "max rise (r = span/2)", "1-D curvature"], rows))
    items += [figure(name, title, caption) for name, title, caption in COMPARE_FIGURES if (folder / name).is_file()]
    return write_manifest(folder, f"Loss surfaces compared: {' vs '.join(c.get('labels', []))} ({{path}})", items)


__all__ = ["COMPARE_FIGURES", "FIGURES", "explain_rows", "write_compare_manifest", "write_explain_manifest"]
