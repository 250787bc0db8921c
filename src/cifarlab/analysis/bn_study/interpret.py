"""Summary table and interpretation of a bn-study, derived from the measured numbers only.

Every sentence is computed: the direction ("smaller", "not smaller") and the percentage come from the two
values being compared, so a run where BN does not help says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cifarlab.analysis.bn_study.settings import MODELS, StudySettings, to_dict

LABEL = {"vgg_a": "VGG-A", "vgg_a_bn": "VGG-A+BN", "vgg_a_noisy_bn": "VGG-A+noisy BN"}


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def model_metrics(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    from cifarlab.analysis.bn_study.plots import band_arrays

    out: dict[str, dict[str, Any]] = {m: {} for m in MODELS}
    if "band" in results:
        for m, (lo, hi) in band_arrays(results["band"]).items():
            out[m]["band_width_mean"] = float(np.mean(hi - lo))
            out[m]["band_max_mean"] = float(np.mean(hi))  # the worst LR's loss, step by step
            out[m]["band_min_mean"] = float(np.mean(lo))  # the best LR's loss
    for r in results.get("landscape", []):
        m, probes = r["spec"]["model"], r["probes"]
        if not probes:
            continue
        out[m]["landscape_range_mean"] = _mean([max(p["losses"]) - min(p["losses"]) for p in probes])
        out[m]["pred_mean"] = _mean([float(np.mean(p["grad_diffs"])) for p in probes])
        out[m]["pred_max_mean"] = _mean([max(p["grad_diffs"]) for p in probes])
        betas = [max(p["betas"]) for p in probes]
        out[m]["beta_mean"] = _mean(betas)
        out[m]["beta_max"] = float(max(betas))
        out[m]["beta_std"] = float(np.std(betas))  # the paper: with BN the measures also "vary less"
        # Second half of the probed steps: the closer analogue of the paper's 15k-step plots, where both
        # networks train; early probes of a short run catch the standard VGG-A on its initial plateau.
        late = probes[len(probes) // 2 :]
        out[m]["beta_mean_late"] = _mean([max(p["betas"]) for p in late])
        out[m]["pred_mean_late"] = _mean([float(np.mean(p["grad_diffs"])) for p in late])
        out[m]["probe_loss_mean"] = _mean([p["loss"] for p in probes if "loss" in p])
    for r in results.get("ics", []):
        m = r["spec"]["model"]
        out[m]["ics_l2_mean"] = _mean([row["l2"] / row["grad_norm"] if row["grad_norm"] > 0 else None
                                       for row in r["ics"]])
        out[m]["ics_cos_mean"] = _mean([row["cos"] for row in r["ics"]])
    for r in results.get("train", []):
        m = r["spec"]["model"]
        lr = f"{r['spec']['lr']:g}"
        out[m].setdefault("test_acc", {})[lr] = r.get("test_acc")
        out[m].setdefault("status", {})[lr] = r["status"]
        out[m].setdefault("seconds_per_epoch", {})[lr] = r.get("seconds_per_epoch")
    return out


def _compare(label: str, bn: float | None, std: float | None, lower_better: bool, good: str, bad: str,
             fmt: str = ".3g", unit: str = "") -> str | None:
    """One sentence: both values, the relative change, and the verdict that the numbers give."""
    if bn is None or std is None:
        return None
    change = (bn - std) / abs(std) * 100 if std != 0 else float("nan")
    better = bn < std if lower_better else bn > std
    pct = f"{change:+.0f} %" if math.isfinite(change) else "n/a"
    verdict = good if better else bad
    return f"{label}: BN {bn:{fmt}}{unit} vs {std:{fmt}}{unit} without ({pct}) → {verdict}"


def summarize(results: dict[str, list[dict[str, Any]]], s: StudySettings) -> dict[str, Any]:
    metrics = model_metrics(results)
    bn, std = metrics["vgg_a_bn"], metrics["vgg_a"]
    lines = [
        _compare("loss band over LRs (mean width)", bn.get("band_width_mean"), std.get("band_width_mean"), True,
                 "BN less sensitive to the learning rate", "BN not less sensitive to the learning rate here"),
        _compare("loss band upper edge (worst LR's loss, mean over steps)", bn.get("band_max_mean"),
                 std.get("band_max_mean"), True, "BN lower: even its worst LR trains faster",
                 "BN not lower here"),
        _compare("loss band lower edge (best LR's loss, mean over steps)", bn.get("band_min_mean"),
                 std.get("band_min_mean"), True, "BN lower", "BN not lower here"),
        _compare("loss landscape along -g (mean max-min over eta)", bn.get("landscape_range_mean"),
                 std.get("landscape_range_mean"), True, "BN flatter along -g", "BN not flatter here"),
        _compare("gradient predictiveness (mean ||grad L(w-eta g) - g||)", bn.get("pred_mean"),
                 std.get("pred_mean"), True, "BN gradients more predictive", "BN gradients not more predictive here"),
        _compare("effective beta-smoothness (mean)", bn.get("beta_mean"), std.get("beta_mean"), True, "BN smoother",
                 "BN not smoother here"),
        _compare("effective beta-smoothness (mean, second half of the probes)", bn.get("beta_mean_late"),
                 std.get("beta_mean_late"), True, "BN smoother", "BN not smoother here"),
        _compare("variation of beta over the probes (std)", bn.get("beta_std"), std.get("beta_std"), True,
                 "BN varies less", "BN does not vary less here"),
        _compare("gradient predictiveness (mean, second half of the probes)", bn.get("pred_mean_late"),
                 std.get("pred_mean_late"), True, "BN gradients more predictive",
                 "BN gradients not more predictive here"),
        _compare("effective beta-smoothness (max)", bn.get("beta_max"), std.get("beta_max"), True, "BN smoother",
                 "BN not smoother here"),
        _compare("ICS ||G-G'||/||G|| (mean)", bn.get("ics_l2_mean"), std.get("ics_l2_mean"), True,
                 "BN reduced ICS", "BN did not reduce ICS here (as the paper also finds)"),
    ]
    chance = math.log(10)
    for m in MODELS:
        loss = metrics[m].get("probe_loss_mean")
        if loss is not None and loss > 0.9 * chance:
            # Derived caveat: near chance-level loss the network sits on its initial plateau, where gradients
            # are tiny and every curvature measure is small; the paper compares networks that train.
            lines.append(f"caveat: {LABEL[m]}'s loss at the probed steps averaged {loss:.3f} (chance level "
                         f"{chance:.3f}): it was still on its initial plateau during the probes, where the "
                         f"landscape is flat because nothing is learnt yet; longer runs (paper scale) are needed "
                         f"to compare it with a training network")
    for lr, acc in sorted(std.get("test_acc", {}).items(), key=lambda kv: float(kv[0])):
        lines.append(_compare(f"test accuracy at lr {lr}", (bn.get("test_acc") or {}).get(lr), acc, False,
                              "BN more accurate", "BN not more accurate here", fmt=".1%"))
    noisy: dict[str, Any] = {}
    for r in results.get("noisy", []):
        noisy[r["spec"]["model"]] = {"test_acc": r.get("test_acc"), "status": r["status"],
                                     "final_train_loss": _mean(r["step_loss"][-20:])}
    if noisy.get("vgg_a_noisy_bn") and noisy.get("vgg_a_bn") and noisy.get("vgg_a"):
        nb, b, st = (noisy[k]["final_train_loss"] for k in ("vgg_a_noisy_bn", "vgg_a_bn", "vgg_a"))
        if None not in (nb, b, st):
            # "Trains as well" is judged on the training loss (what the paper plots): where noisy BN lies
            # between the standard network (0) and BN (1).
            frac = (st - nb) / (st - b) if st != b else float("nan")
            lines.append(f"noisy BN training loss (last 20 steps): {nb:.3f} vs BN {b:.3f} and standard {st:.3f} → "
                         + ("noisy BN trains about as well as BN despite the injected shift" if frac >= 0.8 else
                            f"noisy BN keeps {frac:.0%} of BN's advantage over standard VGG-A" if frac > 0 else
                            "noisy BN does not train better than standard VGG-A here"))
        acc = [noisy[k]["test_acc"] for k in ("vgg_a_noisy_bn", "vgg_a_bn", "vgg_a")]
        if None not in acc:
            lines.append(f"noisy BN test accuracy (eval mode, no noise): {acc[0]:.1%} vs BN {acc[1]:.1%} and "
                         f"standard {acc[2]:.1%} → " + ("noisy BN generalises like BN" if acc[0] >= acc[1] - 0.03
                                                       else "noisy BN behind BN on test accuracy here"))
    return {"scale": s.scale, "settings": to_dict(s), "models": metrics, "noisy": noisy,
            "interpretation": [line for line in lines if line]}


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return ", ".join(f"lr {k}: {_fmt(x, pct)}" for k, x in v.items())
    if isinstance(v, str):
        return v
    return f"{v:.1%}" if pct else f"{v:.4g}"


SUMMARY_COLUMNS = [
    ("band_width_mean", "loss band width (mean)", False), ("landscape_range_mean", "landscape range", False),
    ("pred_mean", "grad. predictiveness (mean)", False), ("beta_mean", "β mean", False),
    ("beta_mean_late", "β mean (2nd half)", False), ("beta_std", "β std", False), ("beta_max", "β max", False),
    ("ics_l2_mean", "ICS ‖G−G′‖/‖G‖", False), ("ics_cos_mean", "ICS cos", False),
    ("test_acc", "test accuracy", True), ("seconds_per_epoch", "s/epoch", False),
]
NOISY_HEADER = ["noisy-BN part", "test accuracy", "final train loss (mean of last 20 steps)", "status"]


def summary_tables(summary: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of the per-model table and, when present, the noisy-BN table: one source for the
    study's Markdown and the HTML report."""
    header = ["model"] + [c[1] for c in SUMMARY_COLUMNS]
    rows = [[LABEL.get(m, m)] + [_fmt(vals.get(k), pct) for k, _, pct in SUMMARY_COLUMNS]
            for m, vals in summary["models"].items()]
    tables = [(header, rows)]
    if summary.get("noisy"):
        noisy = [[LABEL.get(m, m), _fmt(v["test_acc"], True), _fmt(v["final_train_loss"]), str(v["status"])]
                 for m, v in summary["noisy"].items()]
        tables.append((NOISY_HEADER, noisy))
    return tables


def to_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# bn-study summary ({summary['scale']} scale)"]
    for header, rows in summary_tables(summary):
        lines += ["", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "## Interpretation (generated from the numbers above)", ""]
    lines += [f"- {line}" for line in summary["interpretation"]]
    if "wall_seconds" in summary:
        lines += ["", f"Wall time of this invocation: {summary['wall_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
