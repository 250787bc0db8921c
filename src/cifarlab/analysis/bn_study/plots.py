"""Figures and CSVs of each bn-study part (matplotlib Agg canvases from cifarlab.plotting: no display, no pyplot).

With several seeds a curve is the mean over seeds and its shade the range over seeds (min to max), so the
spread that decides a finding is visible. Colours follow the course figure: standard VGG-A green, VGG-A + BN
red, noisy BN purple. Layouts are constrained (titles, labels and legends never overlap).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cifarlab.analysis.bn_study.interpret import arm
from cifarlab.analysis.bn_study.probes import loss_band
from cifarlab.analysis.bn_study.settings import MODELS, StudySettings
from cifarlab.io import write_csv
from cifarlab.plotting import SUPTITLE_SIZE, epoch_axis, new_figure, percent_axis, save

COLORS = {"vgg_a": "tab:green", "vgg_a_bn": "tab:red", "vgg_a_noisy_bn": "tab:purple"}
LABELS = {"vgg_a": "standard VGG-A", "vgg_a_bn": "VGG-A + BN", "vgg_a_noisy_bn": "VGG-A + noisy BN"}
STYLES = ("-", "--", ":", "-.")
Runs = list[dict[str, Any]]


def smooth(values: np.ndarray | list[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far); window 1 returns the input."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def figure(w: float, h: float) -> Any:
    return new_figure(w, h)  # constrained layout (cifarlab.plotting's house style)


def save_fig(fig: Any, path: Path) -> None:
    save(fig, path, dpi=110)


def _model(run: dict[str, Any]) -> str:
    return run["spec"]["model"]


def _lr(run: dict[str, Any]) -> float:
    return float(run["spec"]["lr"])


def _label(a: str) -> str:
    model, _, n_mu = a.partition("@")
    return LABELS.get(model, model) + (f" (n_mu {n_mu})" if n_mu else "")


def _color(a: str) -> str:
    return COLORS.get(a.partition("@")[0], "k")


def by_arm(runs: Runs, with_lr: bool = False) -> dict[Any, Runs]:
    """Runs grouped by arm (and LR): the seeds of one curve."""
    groups: dict[Any, Runs] = defaultdict(list)
    for r in runs:
        groups[(arm(r), _lr(r)) if with_lr else arm(r)].append(r)
    return dict(groups)


def seed_band(curves: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, min, max) over seeds at each index, truncated to the shortest curve."""
    n = min(len(c) for c in curves)
    a = np.asarray([c[:n] for c in curves], dtype=np.float64)
    return a.mean(0), a.min(0), a.max(0)


def _plot_band(ax: Any, x: np.ndarray, curves: list[list[float]], window: int = 1, **kw: Any) -> None:
    mean, lo, hi = (smooth(v, window) for v in seed_band(curves))
    ax.plot(x[: len(mean)], mean, **kw)
    if len(curves) > 1:
        ax.fill_between(x[: len(mean)], lo, hi, color=kw.get("color"), alpha=0.15, lw=0)


def _style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)


def _step_rows(runs: Runs) -> list[dict[str, Any]]:
    return [{"run": r["name"], "model": _model(r), "lr": _lr(r), "seed": r["spec"]["seed"], "step": i,
             "loss": loss, "acc": acc}
            for r in runs for i, (loss, acc) in enumerate(zip(r["step_loss"], r["step_acc"]))]


def _epoch_rows(runs: Runs) -> list[dict[str, Any]]:
    return [{"run": r["name"], "model": _model(r), "lr": _lr(r), "seed": r["spec"]["seed"], **e} for r in runs
            for e in r["epochs"]]


def _final_rows(runs: Runs) -> list[dict[str, Any]]:
    keys = ("status", "steps_done", "seconds_per_epoch", "train_seconds", "val_acc", "test_acc", "test_loss")
    extra = ("test_acc_clean_stats", "test_acc_batch_stats")
    return [{"run": r["name"], "model": _model(r), "lr": _lr(r), "seed": r["spec"]["seed"],
             **{k: r.get(k) for k in keys}, **{k: r.get("summary", {}).get(k) for k in extra}} for r in runs]


def _curves(runs: Runs, folder: Path, title: str, window: int) -> None:
    save_fig(curves_figure(runs, title, window), folder / "curves.png")


def curves_figure(runs: Runs, title: str, window: int) -> Any:
    """Training loss and accuracy per step (mean over seeds, range shaded), validation accuracy per epoch."""
    fig = figure(15, 5.0)
    ax = fig.subplots(1, 3)
    groups = by_arm(runs, with_lr=True)
    lrs = sorted({lr for _, lr in groups})
    for (a, lr), rs in sorted(groups.items()):
        kw = {"color": _color(a), "linestyle": STYLES[lrs.index(lr) % len(STYLES)],
              "label": f"{_label(a)}, lr {lr:g}" + (" (diverged)" if any(r["status"] != "completed" for r in rs)
                                                    else "")}
        x = np.arange(max(len(r["step_loss"]) for r in rs))
        _plot_band(ax[0], x, [r["step_loss"] for r in rs], window, **kw)
        _plot_band(ax[1], x, [[100 * v for v in r["step_acc"]] for r in rs], window, **kw)
        ep = [[100 * e["val_acc"] for e in r["epochs"]] for r in rs]
        _plot_band(ax[2], np.arange(1, 1 + max(map(len, ep))), ep, marker="o", ms=3, **kw)
    _style(ax[0], f"training loss per step (moving average of {window})", "step", "loss")
    _style(ax[1], f"training accuracy per step (moving average of {window})", "step", "accuracy (%)")
    _style(ax[2], "validation accuracy per epoch", "epoch", "accuracy (%)")
    for a in ax[1:]:
        percent_axis(a, fraction=False)
    epoch_axis(ax[2], max((len(r["epochs"]) for r in runs), default=0))
    fig.legend(*ax[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(title + f"; mean over {len({r['spec']['seed'] for r in runs})} seeds, shade: range over seeds",
                 fontsize=SUPTITLE_SIZE)
    return fig


def write_train(runs: Runs, folder: Path, s: StudySettings, name: str = "train") -> None:
    write_csv(folder / "steps.csv", _step_rows(runs))
    write_csv(folder / "epochs.csv", _epoch_rows(runs))
    write_csv(folder / "final.csv", _final_rows(runs))
    opt = runs[0]["spec"]["optimizer"] if runs else "sgd"
    _curves(runs, folder, f"{name}: {opt}, batch {s.batch_size}, width x{s.width_mult:g}, "
            f"{'with' if runs and runs[0]['spec']['augment'] else 'no'} augmentation", window=10)


def band_arrays(runs: Runs) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per model, per seed: (min, max) over its LR runs at each step (truncated to the shortest run)."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for m in MODELS:
        seeds = sorted({r["spec"]["seed"] for r in runs if _model(r) == m})
        out[m] = [loss_band([r["step_loss"] for r in runs if _model(r) == m and r["spec"]["seed"] == sd])
                  for sd in seeds]
    return {m: v for m, v in out.items() if v}


def write_band(runs: Runs, folder: Path, s: StudySettings) -> None:
    write_csv(folder / "losses.csv", _step_rows(runs))
    bands = band_arrays(runs)
    rows = [{"model": m, "seed": k, "step": i, "min": float(lo[i]), "max": float(hi[i])}
            for m, per_seed in bands.items() for k, (lo, hi) in enumerate(per_seed) for i in range(len(lo))]
    write_csv(folder / "band.csv", rows)
    fig = figure(9, 5)
    ax = fig.subplots()
    w = s.band.smooth
    for m, per_seed in bands.items():
        lo, _, _ = seed_band([list(b[0]) for b in per_seed])
        hi, _, _ = seed_band([list(b[1]) for b in per_seed])
        x = np.arange(len(lo))
        ax.fill_between(x, smooth(lo, w), smooth(hi, w), color=COLORS[m], alpha=0.4, label=LABELS[m])
    lrs = ", ".join(f"{lr:g}" for lr in s.band.lrs)
    _style(ax, f"Loss band over learning rates [{lrs}] ({s.band.optimizer}, batch {s.batch_size}): per-step "
           f"min/max over the LR runs, mean of each edge over {len(s.seeds)} seeds"
           + (f", moving average of {w} steps" if w > 1 else ""), "step", "training loss")
    ax.legend()
    save_fig(fig, folder / "band.png")


def probe_rows(runs: Runs) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    summary, per_eta = [], []
    for r in runs:
        base = {"model": _model(r), "seed": r["spec"]["seed"]}
        for p in r["probes"]:
            summary.append({**base, "step": p["step"], "loss": p["loss"], "grad_norm": p["grad_norm"],
                            "loss_min": min(p["losses"]), "loss_max": max(p["losses"]),
                            "pred_min": min(p["grad_diffs"]), "pred_max": max(p["grad_diffs"]),
                            "beta": max(p["betas"]), "beta_at_edge": p.get("beta_at_edge")})
            for j, eta in enumerate(p.get("etas", r["spec"]["etas"])):
                per_eta.append({**base, "step": p["step"], "eta": eta, "loss": p["losses"][j],
                                "grad_diff": p["grad_diffs"][j], "beta": p["betas"][j],
                                "rel_diff": p["rel_diffs"][j] if "rel_diffs" in p else None,
                                "loss_slope": p["loss_slopes"][j] if "loss_slopes" in p else None})
    return summary, per_eta


def _by_model_step(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    """Per model: steps and, per step, the values over seeds."""
    out: dict[str, Any] = {}
    for m in MODELS:
        sel = [r for r in rows if r["model"] == m]
        steps = sorted({r["step"] for r in sel})
        out[m] = (steps, [[key(r) for r in sel if r["step"] == st] for st in steps])
    return {m: v for m, v in out.items() if v[0]}


def write_landscape(runs: Runs, folder: Path, s: StudySettings) -> None:
    summary, per_eta = probe_rows(runs)
    write_csv(folder / "probes.csv", summary)
    write_csv(folder / "probes_eta.csv", per_eta)
    write_csv(folder / "steps.csv", _step_rows(runs))
    fig = figure(16, 4.8)
    ax = fig.subplots(1, 3)
    for i, (lo_key, hi_key, title, ylabel) in enumerate((
            ("loss_min", "loss_max", "(a) loss landscape: min-max over eta of L(w - eta g)", "loss (log)"),
            ("pred_min", "pred_max", "(b) gradient predictiveness: min-max over eta", "||grad L(w - eta g) - g||"),
            ("beta", "beta", "(c) effective beta-smoothness: max over eta", "max ||dg|| / (eta ||g||)"))):
        high_by_model = _by_model_step(summary, lambda r, k=hi_key: r[k])
        for m, (steps, lows) in _by_model_step(summary, lambda r, k=lo_key: r[k]).items():
            highs = high_by_model[m][1]
            lo, hi = np.array([np.mean(v) for v in lows]), np.array([np.mean(v) for v in highs])
            if lo_key == hi_key:
                ax[i].plot(steps, lo, color=COLORS[m], marker="o", ms=3, label=LABELS[m])
                ax[i].fill_between(steps, [min(v) for v in lows], [max(v) for v in lows], color=COLORS[m], alpha=0.15)
            else:
                ax[i].fill_between(steps, lo, hi, color=COLORS[m], alpha=0.4, label=LABELS[m])
        _style(ax[i], title, "step", ylabel)
    ax[0].set_yscale("log")
    ax[0].legend(fontsize=8)
    grid = "log" if s.landscape.grid == "log" else "linear"
    fig.suptitle(f"Santurkar et al. Fig. 4: SGD lr {s.landscape.lr:g}, batch {s.batch_size}, probed every "
                 f"{s.landscape.probe_every} steps; {s.landscape.eta_count} step sizes on a {grid} grid; mean over "
                 f"{len(s.seeds)} seeds", fontsize=10)
    save_fig(fig, folder / "landscape.png")
    _beta_eta(per_eta, folder, s)
    _curvature(runs, folder)


def _beta_eta(per_eta: list[dict[str, Any]], folder: Path, s: StudySettings) -> None:
    """beta(eta) and ||dg||/||g||(eta), mean over probes and seeds: where on the grid beta's max comes from."""
    fig = figure(11, 4.4)
    ax = fig.subplots(1, 2)
    for m in MODELS:
        sel = [r for r in per_eta if r["model"] == m]
        etas = sorted({r["eta"] for r in sel})
        if not etas:
            continue
        for a, key in ((ax[0], "beta"), (ax[1], "rel_diff")):
            vals = [np.mean([r[key] for r in sel if r["eta"] == e and r[key] is not None] or [np.nan]) for e in etas]
            a.plot(etas, vals, color=COLORS[m], marker="o", ms=3, label=LABELS[m])
    _style(ax[0], "effective beta at each step size", "eta", "||dg|| / (eta ||g||)")
    _style(ax[1], "relative gradient change at each step size", "eta", "||dg|| / ||g||")
    for a in ax:
        a.set_xscale("log")
        a.set_yscale("log")
        a.axvline(s.landscape.lr, color="grey", lw=0.8, ls="--")
    ax[0].legend(fontsize=8)
    fig.suptitle(f"Step-size dependence (dashed: the training LR {s.landscape.lr:g}); mean over probes and seeds",
                 fontsize=10)
    save_fig(fig, folder / "beta_eta.png")


def _curvature(runs: Runs, folder: Path) -> None:
    rows = [{"model": _model(r), "seed": r["spec"]["seed"], **c} for r in runs for c in r.get("curvature", [])]
    if not rows:
        return
    write_csv(folder / "curvature.csv", [{k: v for k, v in row.items() if not isinstance(v, list)} for row in rows])
    fig = figure(11, 4.4)
    ax = fig.subplots(1, 2)
    for m in MODELS:
        for k, sd in enumerate(sorted({row["seed"] for row in rows if row["model"] == m})):
            sel = sorted((row for row in rows if row["model"] == m and row["seed"] == sd), key=lambda q: q["step"])
            kw = {"color": COLORS[m], "alpha": 0.7, "marker": "o", "ms": 3, "label": LABELS[m] if k == 0 else None}
            ax[0].plot([q["step"] for q in sel], [q["lambda_max"] for q in sel], **kw)
            ax[1].plot([q["loss"] for q in sel], [q["lambda_max"] for q in sel], **kw)
    _style(ax[0], "top Hessian eigenvalue vs step (one line per seed)", "step", "lambda_max (log)")
    _style(ax[1], "top Hessian eigenvalue vs training loss (matched-loss view)", "batch loss", "lambda_max (log)")
    for a in ax:
        a.set_yscale("log")
    ax[0].legend(fontsize=8)
    save_fig(fig, folder / "curvature.png")


def write_ics(runs: Runs, folder: Path, s: StudySettings) -> None:
    rows = [{"model": _model(r), "seed": r["spec"]["seed"], **row,
             "rel": row["l2"] / row["grad_norm"] if row["grad_norm"] > 0 else float("nan")} for r in runs
            for row in r["ics"]]
    write_csv(folder / "ics.csv", rows)
    save_fig(ics_figure(rows, s), folder / "ics.png")


def ics_figure(rows: list[dict[str, Any]], s: StudySettings) -> Any:
    layers = list(s.ics.layers)
    fig = figure(max(4.6 * len(layers), 9.0), 8.0)
    ax = fig.subplots(2, len(layers), squeeze=False)
    for j, layer in enumerate(layers):
        sel = [row for row in rows if row["layer"] == layer]
        for i, key in enumerate(("rel", "cos")):
            for m, (steps, vals) in _by_model_step(sel, lambda r, k=key: r[k]).items():
                ax[i, j].plot(steps, [np.mean(v) for v in vals], marker="o", ms=3, color=COLORS[m], label=LABELS[m])
                ax[i, j].fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], color=COLORS[m],
                                      alpha=0.15)
        _style(ax[0, j], f"layer {layer}: ||G - G'|| / ||G||", "step", "relative change")
        _style(ax[1, j], f"layer {layer}: cos(G, G')", "step", "cosine")
    ax[0, 0].legend(fontsize=8)
    fig.suptitle(f"Internal covariate shift (Definition 2.1), SGD lr {s.landscape.lr:g}: G' = gradient after layers "
                 f"1..i-1 took their step; mean over {len(s.seeds)} seeds, shade: range", fontsize=SUPTITLE_SIZE)
    return fig


def write_noisy(runs: Runs, folder: Path, s: StudySettings) -> None:
    from cifarlab.analysis.bn_study.noisy import plot_activation_distributions

    write_train(runs, folder, s, name="noisy BN (Algorithm 1) vs BN vs standard")
    rows = {_label(a): [row for r in rs for row in r.get("activations", []) if r["spec"]["seed"] == s.seeds[0]]
            for a, rs in sorted(by_arm(runs).items())}
    rows = {k: v for k, v in rows.items() if v}
    if rows:
        plot_activation_distributions(rows, folder / "activations.png",
                                      f"Activations of conv unit {s.noisy.activation_unit} over training (seed "
                                      f"{s.seeds[0]}): quantiles 5-95 % and 25-75 %, median")


WRITERS: dict[str, Callable[[Runs, Path, StudySettings], None]] = {
    "train": write_train, "band": write_band, "landscape": write_landscape, "ics": write_ics, "noisy": write_noisy,
}


def write_part(part: str, runs: Runs, folder: Path, s: StudySettings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    WRITERS[part](runs, folder, s)
