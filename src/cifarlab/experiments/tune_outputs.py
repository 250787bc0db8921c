"""What a finished tune leaves in its folder: trials.csv, tune.json, figures and manifest.json (for ``report``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cifarlab.io import write_csv
from cifarlab.manifest import figure, table, text, write_manifest

BASE_FIELDS = ("number", "state", "status", "value", "epochs", "run_dir", "error")


def counted(trial: Any) -> bool:
    """Whether a trial counts against the budget: not an interrupted (re-enqueued) one, not a surplus ask."""
    return not trial.user_attrs.get("interrupted") and not trial.user_attrs.get("surplus")


def trial_rows(study: Any, params: list[str]) -> list[dict[str, Any]]:
    """One row per trial that counts (interrupted and surplus asks are left out), in trial order."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if not counted(t) or not t.state.is_finished():
            continue
        row = {"number": t.number, "state": t.state.name.lower(), "status": t.user_attrs.get("status", ""),
               "value": t.value, "epochs": max(t.intermediate_values, default=None),
               "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error")}
        row.update({k: t.params.get(k) for k in params})
        rows.append(row)
    return rows


def _objective_axis(ax: Any, objective: str, label: str) -> None:
    """An accuracy objective in % (as every table shows it); a loss as it is."""
    from cifarlab.plotting import percent_axis

    if objective.endswith("acc"):
        percent_axis(ax, label=f"{label} (%)" if label else "")
    else:
        ax.set_ylabel(label)


def history_plot(rows: list[dict[str, Any]], objective: str, maximize: bool) -> Any:
    from cifarlab.plotting import TITLE_SIZE, integer_ticks, new_figure

    fig = new_figure(6.4, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    done = [r for r in rows if r["state"] == "complete"]
    ax.scatter([r["number"] for r in done], [r["value"] for r in done], s=22, label="trial (complete)")
    best, xs, ys = None, [], []
    for r in done:
        if best is None or (r["value"] > best if maximize else r["value"] < best):
            best = r["value"]
        xs.append(r["number"])
        ys.append(best)
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    pruned = [r["number"] for r in rows if r["state"] == "pruned"]
    if pruned and done:
        lo = min(r["value"] for r in done)
        ax.scatter(pruned, [lo] * len(pruned), marker="x", color="0.5", label="pruned (drawn at the bottom)")
    ax.set_xlabel("trial number")
    integer_ticks(ax)
    _objective_axis(ax, objective, f"final-epoch {objective}, validation")
    ax.set_title("Optimisation history", fontsize=TITLE_SIZE)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def slices_plot(rows: list[dict[str, Any]], space: dict[str, Any], objective: str) -> Any:
    from matplotlib.ticker import NullFormatter

    from cifarlab.plotting import SUPTITLE_SIZE, new_figure

    done = [r for r in rows if r["state"] == "complete"]
    n = len(space)
    fig = new_figure(3.2 * n, 3.6)
    for i, (key, p) in enumerate(space.items()):
        ax = fig.add_subplot(1, n, i + 1)
        xs = [r[key] for r in done]
        if p.type == "categorical":  # one column per choice, in the file's order
            ax.set_xticks(range(len(p.choices)), [str(c) for c in p.choices])
            xs = [p.choices.index(x) if x in p.choices else -1 for x in xs]
            ax.set_xlim(-0.5, len(p.choices) - 0.5)
        ax.scatter(xs, [r["value"] for r in done], c=[r["number"] for r in done], cmap="viridis", s=22)
        if p.log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log range overlap
            ticks = [p.low, math.sqrt(p.low * p.high), p.high]  # the searched range, labelled at both ends
            ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
        ax.set_xlabel(key)
        _objective_axis(ax, objective, f"{objective}, validation" if i == 0 else "")
        ax.set_title(key, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("Objective against each parameter (colour: trial number)", fontsize=SUPTITLE_SIZE)
    return fig


def _importances(study: Any, n_complete: int) -> dict[str, float]:
    import optuna

    if n_complete < 6 or len(study.best_params) < 2:  # below that Optuna can only say "all equal"
        return {}
    try:
        return dict(optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
    except Exception:  # too few trials, a constant parameter, an older Optuna: importances are optional
        return {}


def importances_plot(imp: dict[str, float]) -> Any:
    from cifarlab.plotting import TITLE_SIZE, new_figure

    fig = new_figure(5.6, 1.2 + 0.45 * len(imp))
    ax = fig.add_subplot(1, 1, 1)
    keys = list(imp)[::-1]
    ax.barh(keys, [imp[k] for k in keys], color="C0")
    ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    ax.set_ylabel("parameter")
    ax.set_title("Parameter importances", fontsize=TITLE_SIZE)
    return fig


def write_figures(tune_dir: Path, study: Any, rows: list[dict[str, Any]], spec: Any) -> list[dict[str, Any]]:
    """PNG files into ``TUNE/figures/``; their manifest items."""
    from cifarlab.plotting import save

    if not any(r["state"] == "complete" for r in rows):
        return []
    folder = tune_dir / "figures"
    folder.mkdir(exist_ok=True)
    save(history_plot(rows, spec.objective, spec.direction == "maximize"), folder / "history.png")
    save(slices_plot(rows, spec.space, spec.objective), folder / "slices.png")
    items = [figure("figures/history.png", "Optimisation history", "Final-epoch validation objective of each "
                    "finished trial and the best so far; pruned trials marked x."),
             figure("figures/slices.png", "Slice plots", "The objective of each complete trial against each "
                    "searched parameter.")]
    imp = _importances(study, sum(r["state"] == "complete" for r in rows))
    if imp:
        save(importances_plot(imp), folder / "importance.png")
        items.append(figure("figures/importance.png", "Parameter importances",
                            "How much of the objective's variation each parameter explains (Optuna, PED-ANOVA)."))
    return items


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def write_tune_outputs(tune_dir: Path, study: Any, spec: Any, result: dict[str, Any], log: Any) -> None:
    params = list(spec.space)
    rows = trial_rows(study, params)
    write_csv(tune_dir / "trials.csv", rows, [*BASE_FIELDS, *params])
    try:
        figures = write_figures(tune_dir, study, rows, spec)
    except Exception as exc:  # figures are a convenience: never lose a finished tune over one
        log(f"warning: could not write figures ({type(exc).__name__}: {exc})")
        figures = []
    ranked = sorted((r for r in rows if r["state"] == "complete"), key=lambda r: r["value"],
                    reverse=spec.direction == "maximize")
    header = ["trial", spec.objective, *params]
    top = [[r["number"], _fmt(r["value"]), *(_fmt(r[k]) for k in params)] for r in ranked[:10]]
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail")}
    final = result.get("final") or {}
    summary = (f"{len(rows)} trials ({counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} "
               f"failed), sampler {spec.sampler}, pruner {spec.pruner}, objective final-epoch {spec.objective} on "
               f"the validation split. Best trial {result.get('best_trial')}: {_fmt(result.get('best_value'))}. "
               f"Its config retrained once and tested: test_acc {_fmt(final.get('test_acc'))} "
               f"(the only test evaluation of the tune). best_config.yaml: cifarlab train -c best_config.yaml")
    items = [text(summary), table("Best trials", f"Top {len(top)} complete trials by {spec.objective}.",
                                  header, top), *figures]
    covers = sorted({str(Path(r["run_dir"]).parts[0]) for r in rows if r.get("run_dir")} | {"final"})
    write_manifest(tune_dir, f"Tune {spec.name}" + (f" ({spec.scale})" if spec.scale else ""), items, covers=covers)
