"""Figures and CSVs of each bn-study part (matplotlib Agg canvases from cifarlab.plotting: no display, no pyplot).

Colours follow the course figure: standard VGG-A green, VGG-A + BN red (noisy BN purple).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from cifarlab.analysis.bn_study.probes import loss_band
from cifarlab.analysis.bn_study.settings import MODELS, StudySettings
from cifarlab.io import atomic_write_bytes, write_csv
from cifarlab.plotting import new_figure

COLORS = {"vgg_a": "tab:green", "vgg_a_bn": "tab:red", "vgg_a_noisy_bn": "tab:purple"}
LABELS = {"vgg_a": "standard VGG-A", "vgg_a_bn": "VGG-A + BN", "vgg_a_noisy_bn": "VGG-A + noisy BN"}
STYLES = ("-", "--", ":", "-.")


def smooth(values: np.ndarray | list[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far); window 1 returns the input."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def save_fig(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _model(run: dict[str, Any]) -> str:
    return run["spec"]["model"]


def _lr(run: dict[str, Any]) -> float:
    return float(run["spec"]["lr"])


def _step_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        for i, (loss, acc) in enumerate(zip(run["step_loss"], run["step_acc"])):
            rows.append({"run": run["name"], "model": _model(run), "lr": _lr(run), "step": i, "loss": loss,
                         "acc": acc})
    return rows


def _epoch_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"run": r["name"], "model": _model(r), "lr": _lr(r), **e} for r in runs for e in r["epochs"]]


def _final_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("status", "steps_done", "seconds_per_epoch", "train_seconds", "val_acc", "test_acc", "test_loss")
    return [{"run": r["name"], "model": _model(r), "lr": _lr(r), **{k: r.get(k) for k in keys}} for r in runs]


def _curves(runs: list[dict[str, Any]], folder: Path, title: str, window: int) -> None:
    """2x2: train loss / train accuracy vs step (smoothed), train and validation accuracy vs epoch."""
    fig = new_figure(12, 8)
    ax = fig.subplots(2, 2)
    lrs = sorted({_lr(r) for r in runs})
    for r in runs:
        m, style = _model(r), STYLES[lrs.index(_lr(r)) % len(STYLES)]
        label = f"{LABELS.get(m, m)}, lr {_lr(r):g}" + (" (diverged)" if r["status"] != "completed" else "")
        kw = {"color": COLORS.get(m, "k"), "linestyle": style, "label": label}
        steps = np.arange(len(r["step_loss"]))
        ax[0, 0].plot(steps, smooth(r["step_loss"], window), **kw)
        ax[0, 1].plot(steps, smooth(r["step_acc"], window), **kw)
        ep = [e for e in r["epochs"] if "val_acc" in e]
        ax[1, 0].plot([e["epoch"] for e in r["epochs"]], [e["train_acc"] for e in r["epochs"]], marker="o", **kw)
        ax[1, 1].plot([e["epoch"] for e in ep], [e["val_acc"] for e in ep], marker="o", **kw)
    titles = (f"training loss per step (moving average of {window})", f"training accuracy per step ({window})",
              "training accuracy per epoch (mean over its batches)", "validation accuracy per epoch")
    for a, t, xl in zip(ax.flat, titles, ("step", "step", "epoch", "epoch")):
        a.set_title(t, fontsize=10)
        a.set_xlabel(xl)
        a.grid(alpha=0.3)
    ax[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    save_fig(fig, folder / "curves.png")


def write_train(runs: list[dict[str, Any]], folder: Path, s: StudySettings, name: str = "train") -> None:
    write_csv(folder / "steps.csv", _step_rows(runs))
    write_csv(folder / "epochs.csv", _epoch_rows(runs))
    write_csv(folder / "final.csv", _final_rows(runs))
    opt = runs[0]["spec"]["optimizer"] if runs else "sgd"
    _curves(runs, folder, f"{name}: {opt}, batch {s.batch_size}, width x{s.width_mult:g}, "
            f"{'with' if runs and runs[0]['spec']['augment'] else 'no'} augmentation", window=10)


def band_arrays(runs: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model: (min, max) over its LR runs at each step (truncated to the model's shortest run)."""
    out = {}
    for m in MODELS:
        curves = [r["step_loss"] for r in runs if _model(r) == m]
        if curves:
            out[m] = loss_band(curves)
    return out


def write_band(runs: list[dict[str, Any]], folder: Path, s: StudySettings) -> None:
    write_csv(folder / "losses.csv", _step_rows(runs))
    bands = band_arrays(runs)
    n = min(len(lo) for lo, _ in bands.values())
    rows = [{"step": i, **{f"{m}_{k}": float(v[i]) for m, (lo, hi) in bands.items()
                           for k, v in (("min", lo), ("max", hi))}} for i in range(n)]
    write_csv(folder / "band.csv", rows)
    fig = new_figure(9, 5)
    ax = fig.subplots()
    w = s.band.smooth
    for m, (lo, hi) in bands.items():
        x = np.arange(len(lo))
        ax.fill_between(x, smooth(lo, w), smooth(hi, w), color=COLORS[m], alpha=0.4, label=LABELS[m])
        ax.plot(x, smooth(lo, w), color=COLORS[m], lw=0.8)
        ax.plot(x, smooth(hi, w), color=COLORS[m], lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    lrs = ", ".join(f"{lr:g}" for lr in s.band.lrs)
    ax.set_title(f"Loss landscape: min-max band over learning rates [{lrs}] ({s.band.optimizer}, batch "
                 f"{s.batch_size})\nband = per-step min/max over the LR runs; "
                 + (f"moving average of {w} steps applied to both edges" if w > 1 else "no smoothing"), fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    save_fig(fig, folder / "band.png")


def probe_rows(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    summary, per_eta = [], []
    for r in runs:
        etas = r["spec"]["etas"]
        for p in r["probes"]:
            summary.append({"model": _model(r), "step": p["step"], "loss": p["loss"], "grad_norm": p["grad_norm"],
                            "loss_min": min(p["losses"]), "loss_max": max(p["losses"]),
                            "pred_min": min(p["grad_diffs"]), "pred_max": max(p["grad_diffs"]),
                            "beta": max(p["betas"])})
            for eta, lo, d, b in zip(etas, p["losses"], p["grad_diffs"], p["betas"]):
                per_eta.append({"model": _model(r), "step": p["step"], "eta": eta, "loss": lo, "grad_diff": d,
                                "beta": b})
    return summary, per_eta


def write_landscape(runs: list[dict[str, Any]], folder: Path, s: StudySettings) -> None:
    summary, per_eta = probe_rows(runs)
    write_csv(folder / "probes.csv", summary)
    write_csv(folder / "probes_eta.csv", per_eta)
    write_csv(folder / "steps.csv", _step_rows(runs))
    ls = s.landscape
    fig = new_figure(16, 4.5)
    ax = fig.subplots(1, 3)
    for m in MODELS:
        rows = [row for row in summary if row["model"] == m]
        if not rows:
            continue
        st = [row["step"] for row in rows]
        kw = {"color": COLORS[m], "alpha": 0.4, "label": LABELS[m]}
        ax[0].fill_between(st, [row["loss_min"] for row in rows], [row["loss_max"] for row in rows], **kw)
        ax[1].fill_between(st, [row["pred_min"] for row in rows], [row["pred_max"] for row in rows], **kw)
        ax[2].plot(st, [row["beta"] for row in rows], color=COLORS[m], marker="o", ms=3, label=LABELS[m])
    ax[0].set_yscale("log")
    grid = f"eta in [{ls.eta_low:g}, {ls.eta_high:g}] x lr, {ls.eta_count} points"
    for a, t, yl in zip(ax, ("(a) loss landscape: L(w - eta g)", "(b) gradient predictiveness",
                             "(c) effective beta-smoothness"),
                        ("loss (log)", "||grad L(w - eta g) - g||", "max ||grad L(w - eta g) - g|| / (eta ||g||)")):
        a.set_title(f"{t}\nmin-max over {grid}" if t[1] != "c" else f"{t}\nmax over {grid}", fontsize=9)
        a.set_xlabel("step")
        a.set_ylabel(yl, fontsize=8)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"Santurkar et al. Fig. 4: SGD lr {ls.lr:g}, batch {s.batch_size}, probed every "
                 f"{ls.probe_every} steps on the training batch", y=1.04)
    save_fig(fig, folder / "landscape.png")


def write_ics(runs: list[dict[str, Any]], folder: Path, s: StudySettings) -> None:
    rows = [{"model": _model(r), **row} for r in runs for row in r["ics"]]
    write_csv(folder / "ics.csv", rows)
    layers = list(s.ics.layers)
    fig = new_figure(4.5 * len(layers), 7)
    ax = fig.subplots(2, len(layers), squeeze=False)
    for j, layer in enumerate(layers):
        for m in MODELS:
            sel = [row for row in rows if row["model"] == m and row["layer"] == layer]
            st = [row["step"] for row in sel]
            ax[0, j].plot(st, [row["l2"] for row in sel], marker="o", color=COLORS[m], label=LABELS[m])
            ax[1, j].plot(st, [row["cos"] for row in sel], marker="o", color=COLORS[m], label=LABELS[m])
        ax[0, j].set_title(f"layer {layer}: ||G - G'||_2", fontsize=10)
        ax[1, j].set_title(f"layer {layer}: cos(G, G')", fontsize=10)
        for a in ax[:, j]:
            a.set_xlabel("step")
            a.grid(alpha=0.3)
    ax[0, 0].legend(fontsize=8)
    fig.suptitle(f"Internal covariate shift (Definition 2.1), SGD lr {s.ics.lr:g}: G' = gradient after layers "
                 f"1..i-1 took their step")
    save_fig(fig, folder / "ics.png")


def write_part(part: str, runs: list[dict[str, Any]], folder: Path, s: StudySettings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if part == "train":
        write_train(runs, folder, s)
    elif part == "band":
        write_band(runs, folder, s)
    elif part == "landscape":
        write_landscape(runs, folder, s)
    elif part == "ics":
        write_ics(runs, folder, s)
    elif part == "noisy":
        write_train(runs, folder, s, name="noisy BN (Algorithm 1) vs BN vs standard")
