"""What a bn-study found: per-seed metrics, each claim of the paper tested over seeds, and the summary.

Every sentence is computed from ``findings.py``: a claim gets ``supported`` or ``contradicted`` only when the 95 %
CI of the paired difference (BN − standard, paired by seed) excludes zero, otherwise ``inconclusive``; the
caveats that the numbers themselves imply (a network on its initial plateau, β's maximum at the grid's edge,
curvature compared at equal step although the losses differ) are attached to the claims they weaken.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from cifarlab.analysis.bn_study.findings import Finding, Metric, fmt_ci, make_finding, summarize_arm
from cifarlab.analysis.bn_study.probes import loss_band
from cifarlab.analysis.bn_study.settings import MODELS, StudySettings, to_dict

LABEL = {"vgg_a": "VGG-A", "vgg_a_bn": "VGG-A+BN", "vgg_a_noisy_bn": "VGG-A+noisy BN"}
CHANCE = math.log(10)
PerSeed = dict[str, dict[str, dict[int, float]]]  # metric -> arm -> seed -> value


def arm(run: dict[str, Any]) -> str:
    """The arm a run belongs to: its model, plus the noise strength for noisy BN."""
    spec = run["spec"]
    return spec["model"] + (f"@{spec['noise'][0]:g}" if spec.get("noise") else "")


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def plateau_exit(step_loss: list[float], window: int = 20) -> int | None:
    """First step where the moving-average training loss is below 0.9 x ln 10 (None: never left the plateau)."""
    v = np.asarray(step_loss, dtype=np.float64)
    if len(v) < window:
        return None
    avg = np.convolve(v, np.ones(window) / window, mode="valid")
    below = np.nonzero(avg < 0.9 * CHANCE)[0]
    return int(below[0] + window - 1) if len(below) else None


# --- per-run metrics, by part ------------------------------------------------------------------------------


def _landscape_metrics(run: dict[str, Any]) -> dict[str, float | None]:
    probes = run["probes"]
    if not probes:
        return {}
    late = probes[len(probes) // 2:]
    out = {
        "landscape_range": _mean([max(p["losses"]) - min(p["losses"]) for p in probes]),
        "pred": _mean([float(np.mean(p["grad_diffs"])) for p in probes]),
        "pred_rel": _mean([float(np.mean(p["rel_diffs"])) for p in probes if "rel_diffs" in p]),
        "beta": _mean([max(p["betas"]) for p in probes]),
        "beta_late": _mean([max(p["betas"]) for p in late]),
        "beta_edge_fraction": _mean([float(p["beta_at_edge"]) for p in probes if "beta_at_edge" in p]),
        "probe_loss": _mean([p["loss"] for p in probes]),
    }
    curv = run.get("curvature", [])
    if curv:
        # Power iteration may stall (tiny spectra of a net on its plateau): only converged estimates count.
        ok = [r for r in curv if r.get("lambda_converged", True)]
        out["lambda_unconverged"] = float(len(curv) - len(ok))
        out.update(lambda_max=_mean([r["lambda_max"] for r in ok]), gHg=_mean([r["gHg_over_gg"] for r in curv]),
                   Hg=_mean([r["Hg_over_g"] for r in curv]), trace=_mean([r["trace"] for r in curv]))
    if run.get("ics"):
        out["ics_rel"] = _mean([r["l2"] / r["grad_norm"] if r["grad_norm"] > 0 else None for r in run["ics"]])
        out["ics_cos"] = _mean([r["cos"] for r in run["ics"]])
    return out


def _trained_metrics(run: dict[str, Any]) -> dict[str, float | None]:
    if run["status"] != "completed":
        return {}
    tail = run["step_loss"][-max(1, len(run["step_loss"]) // 10):]
    s = run.get("summary", {})

    def pct(v: float | None) -> float | None:  # accuracies in %, as every table of cifarlab
        return None if v is None else 100 * v

    return {"final_train_loss": _mean(tail), "test_acc": pct(run.get("test_acc")),
            "test_acc_clean_stats": pct(s.get("test_acc_clean_stats")),
            "test_acc_batch_stats": pct(s.get("test_acc_batch_stats"))}


def per_seed_metrics(results: dict[str, list[dict[str, Any]]]) -> PerSeed:
    """metric -> arm -> seed -> value, for every part that ran (diverged runs leave their seed out)."""
    out: PerSeed = defaultdict(lambda: defaultdict(dict))
    # The ics part reads the landscape part's runs: measure them once, from whichever part was loaded.
    for run in results.get("landscape") or results.get("ics", []):
        for key, value in _landscape_metrics(run).items():
            if value is not None:
                out[key][arm(run)][run["spec"]["seed"]] = value
    for part in ("train", "noisy"):
        for run in results.get(part, []):
            prefix = "noisy:" if part == "noisy" else f"lr{run['spec']['lr']:g}:"
            for key, value in _trained_metrics(run).items():
                if value is not None:
                    out[prefix + key][arm(run)][run["spec"]["seed"]] = value
    _band_metrics(results.get("band", []), out)
    _matched_lambda(results.get("landscape", []), out)
    return out


def _matched_lambda(runs: list[dict[str, Any]], out: PerSeed, levels: int = 5) -> None:
    """lambda_max at equal training loss: per seed, log lambda_max interpolated at loss levels that both arms'
    curvature points span (none when the two runs' losses do not overlap)."""
    points: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for run in runs:
        pts = sorted((r["loss"], r["lambda_max"]) for r in run.get("curvature", [])
                     if r["lambda_max"] > 0 and r.get("lambda_converged", True))
        points[(arm(run), run["spec"]["seed"])] = pts
    for seed in {sd for _, sd in points}:
        bn, std = points.get(("vgg_a_bn", seed), []), points.get(("vgg_a", seed), [])
        if len(bn) < 2 or len(std) < 2:
            continue
        lo, hi = max(bn[0][0], std[0][0]), min(bn[-1][0], std[-1][0])
        if lo >= hi:
            continue
        grid = np.linspace(lo, hi, levels)
        for a, pts in (("vgg_a_bn", bn), ("vgg_a", std)):
            loss, lam = np.array([p[0] for p in pts]), np.log([p[1] for p in pts])
            out["lambda_max_matched"][a][seed] = float(np.exp(np.mean(np.interp(grid, loss, lam))))


def _band_metrics(runs: list[dict[str, Any]], out: PerSeed) -> None:
    by_seed: dict[tuple[str, int], list[list[float]]] = defaultdict(list)
    for run in runs:
        by_seed[(arm(run), run["spec"]["seed"])].append(run["step_loss"])
    for (a, seed), curves in by_seed.items():
        lo, hi = loss_band(curves)
        out["band_width"][a][seed] = float(np.mean(hi - lo))
        out["band_max"][a][seed] = float(np.mean(hi))
        out["band_min"][a][seed] = float(np.mean(lo))


# --- claims -------------------------------------------------------------------------------------------------

# (metric key, claim, metric, expected sign of BN - standard). Keys "lr{x}:..." are expanded per train LR.
def _claim(key: str, claim: str, metric: str, expected: str = "lower", unit: str = "",
           better: str | None = None) -> tuple[str, str, Metric, str]:
    """One row of CLAIMS; the metric's better direction is the expected one unless said otherwise."""
    return key, claim, Metric(metric, unit, better or expected), expected  # type: ignore[arg-type]


CLAIMS: list[tuple[str, str, Metric, str]] = [
    _claim("band_width", "BN makes the training loss less sensitive to the learning rate (course band)",
           "band width (max - min loss over LRs, mean over steps)"),
    _claim("band_max", "with BN even the worst learning rate trains faster",
           "band upper edge (worst LR's loss, mean over steps)"),
    _claim("final_train_loss", "BN trains faster (Fig. 1)", "training loss, last 10 % of steps"),
    _claim("test_acc", "BN generalises better", "test accuracy (eval mode)", "higher", unit="%"),
    _claim("landscape_range", "Fig. 4a: the loss changes less along the gradient with BN",
           "max - min of L(w - eta g) over eta"),
    _claim("pred", "Fig. 4b: gradients are more predictive with BN", "||grad L(w - eta g) - g||, mean over eta"),
    _claim("pred_rel", "Fig. 4b, relative: gradients are more predictive with BN",
           "||grad L(w - eta g) - g|| / ||g||, mean over eta"),
    _claim("beta", "Fig. 4c: effective beta-smoothness is smaller with BN", "max over eta of ||dg|| / (eta ||g||)"),
    _claim("lambda_max", "the loss is smoother with BN: smaller top Hessian eigenvalue (equal steps)",
           "lambda_max of the batch Hessian"),
    _claim("lambda_max_matched", "smaller top Hessian eigenvalue with BN at matched training loss",
           "lambda_max at equal training loss"),
    _claim("ics_rel", "BN does not reduce internal covariate shift (Def. 2.1; the paper finds it higher or equal)",
           "||G - G'|| / ||G||", expected="higher", better="lower"),
]


def _caveats(key: str, m: PerSeed) -> list[str]:
    notes = []
    loss = m.get("probe_loss", {}).get("vgg_a", {})
    if key in ("landscape_range", "pred", "pred_rel", "beta", "lambda_max", "ics_rel") and loss and \
            np.mean(list(loss.values())) > 0.9 * CHANCE:
        notes.append(f"standard VGG-A's loss at the probed steps averaged {np.mean(list(loss.values())):.2f} "
                     f"(chance {CHANCE:.2f}): mostly on its initial plateau, where every curvature measure is small")
    edge = m.get("beta_edge_fraction", {}).get("vgg_a_bn", {})
    if key == "beta" and edge and np.mean(list(edge.values())) > 0.25:
        notes.append(f"in {100 * np.mean(list(edge.values())):.0f} % of BN's probes beta's max sits at the grid's "
                     f"edge: the grid, not the landscape, may set beta")
    if key == "lambda_max":
        notes.append("at equal step the BN network is at a lower loss: see the matched-loss comparison")
    return notes


def findings(m: PerSeed, s: StudySettings) -> list[Finding]:
    """Each claim whose metric was measured for both arms, paired by seed; per train LR where it applies."""
    out: list[Finding] = []
    for key, claim, metric, direction in CLAIMS:
        for k in sorted(k for k in m if k == key or (k.endswith(":" + key) and k.startswith("lr"))):
            label = claim if k == key else f"{claim}, lr {k.split(':')[0][2:]}"
            out += _compare(m[k], "vgg_a_bn", label, metric, direction, _caveats(key, m))
    for a in sorted(a for a in m.get("noisy:final_train_loss", {}) if a.startswith("vgg_a_noisy_bn")):
        tag = f"noisy BN (n_mu {a.split('@')[1]}) vs standard"
        out += _compare(m["noisy:final_train_loss"], a, f"{tag}: trains faster despite the injected shift",
                        Metric("training loss, last 10 % of steps", "", "lower"), "lower", [])
        out += _compare(m.get("noisy:test_acc_clean_stats", {}), a, f"{tag}: generalises better",
                        Metric("test accuracy, BN statistics recomputed without noise", "%", "higher"), "higher",
                        ["'BN' in this row is noisy BN"])
    return out


def _compare(by_arm: dict[str, dict[int, float]], treated: str, claim: str, metric: Metric, direction: str,
             caveats: list[str]) -> list[Finding]:
    """``treated`` vs standard VGG-A on the seeds both have (none: no finding)."""
    bn, std = by_arm.get(treated, {}), by_arm.get("vgg_a", {})
    common = sorted(set(bn) & set(std))
    if not common:
        return []
    return [make_finding(claim, metric, {x: bn[x] for x in common}, {x: std[x] for x in common}, direction,
                         caveats)]


def sentence(f: Finding) -> str:
    c = f.comparison
    rel = f" ({100 * c.relative_effect:+.0f} %)" if c.relative_effect is not None else ""
    return (f"{f.claim}: BN {fmt_ci(f.bn.mean, f.bn.ci_low, f.bn.ci_high)} vs standard "
            f"{fmt_ci(f.standard.mean, f.standard.ci_low, f.standard.ci_high)}; BN − standard "
            f"{fmt_ci(c.mean_diff, c.ci_low, c.ci_high)}{rel}, n = {c.n_pairs} → {f.verdict}")


def arm_table(m: PerSeed) -> dict[str, dict[str, dict[str, Any]]]:
    """arm -> metric -> {n, mean, ci_low, ci_high} over seeds."""
    table: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for key, arms in m.items():
        for a, by_seed in arms.items():
            st = summarize_arm(list(by_seed.values()))
            table[a][key] = {"n": st.n, "mean": st.mean, "ci_low": st.ci_low, "ci_high": st.ci_high}
    return dict(table)


def summarize(results: dict[str, list[dict[str, Any]]], s: StudySettings,
              extra: Callable[[PerSeed], None] | None = None) -> dict[str, Any]:
    m = per_seed_metrics(results)
    if extra is not None:
        extra(m)
    found = findings(m, s)
    caveats = [f"{LABEL.get(a.split('@')[0], a)} never left the initial plateau (loss < 0.9 ln 10) in run(s) of "
               f"part {part}" for part, runs in results.items() for a in sorted({arm(r) for r in runs
               if r["status"] == "completed" and plateau_exit(r["step_loss"]) is None})]
    return {"scale": s.scale, "settings": to_dict(s), "seeds": list(s.seeds), "threads": s.threads,
            "per_seed": {k: {a: {str(x): v for x, v in by.items()} for a, by in arms.items()} for k, arms in m.items()},
            "arms": arm_table(m), "findings": [f.to_dict() for f in found],
            "interpretation": [sentence(f) for f in found], "caveats": caveats}


# --- tables -------------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = [
    ("band_width", "loss band width"), ("landscape_range", "landscape range"), ("pred", "‖Δg‖"),
    ("pred_rel", "‖Δg‖/‖g‖"), ("beta", "β"), ("beta_edge_fraction", "β max at grid edge"),
    ("lambda_max", "λ_max"), ("trace", "Hessian trace"), ("ics_rel", "ICS ‖G−G′‖/‖G‖"),
]


def _cell(stats: dict[str, Any] | None) -> str:
    return "-" if stats is None else fmt_ci(stats["mean"], stats["ci_low"], stats["ci_high"])


def summary_tables(summary: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows): per-model means [95 % CI] over seeds, then the trained runs' accuracies per arm."""
    arms = summary["arms"]
    header = ["model"] + [c[1] for c in SUMMARY_COLUMNS]
    rows = [[LABEL.get(a, a)] + [_cell(arms[a].get(k)) for k, _ in SUMMARY_COLUMNS] for a in MODELS if a in arms]
    tables = [(header, rows)]
    acc_keys = sorted({k for a in arms.values() for k in a if k.endswith(("test_acc", "test_acc_clean_stats",
                                                                            "final_train_loss"))})
    if acc_keys:
        tables.append((["arm", *acc_keys], [[_arm_label(a)] + [_cell(arms[a].get(k)) for k in acc_keys]
                                            for a in sorted(arms) if any(k in arms[a] for k in acc_keys)]))
    return tables


def _arm_label(a: str) -> str:
    model, _, n_mu = a.partition("@")
    return LABEL.get(model, model) + (f" (n_mu {n_mu})" if n_mu else "")


def to_markdown(summary: dict[str, Any]) -> str:
    from cifarlab.analysis.bn_study.findings import findings_markdown

    lines = [f"# bn-study summary ({summary['scale']} scale, seeds {summary['seeds']}, {summary['threads']} threads)"]
    for header, rows in summary_tables(summary):
        lines += ["", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Cells: mean over seeds [95 % CI].", "", "## Findings (BN − standard, paired by seed)", "",
              findings_markdown({"findings": summary["findings"]}).rstrip()]
    if summary["caveats"]:
        lines += ["", "## Caveats", "", *(f"- {c}" for c in summary["caveats"])]
    if "wall_seconds" in summary:
        lines += ["", f"Wall time of this invocation: {summary['wall_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
