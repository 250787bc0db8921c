"""Comparison tables of a sweep: one row per variant, final-epoch numbers as mean ± std over its seeds.

Final-epoch numbers, not the best epoch's: choosing the best epoch per run would be selection on the very
numbers being compared. std uses n-1 (sample std); with one seed it is shown as "-".
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab.engine.metrics import read_csv
from cifarlab.io import atomic_write_text, write_csv

DONE = ("completed", "early_stopped")
# (summary key, column title, kind): kind picks the format (acc in %, loss, seconds, epochs)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("epochs_run", "epochs", "epochs"),
    ("train_time_s", "train time (s)", "seconds"),
    ("s_per_epoch", "s/epoch", "seconds"),
    ("final_train_loss", "train loss", "loss"),
    ("final_train_acc", "train acc (%)", "acc"),
    ("final_val_loss", "val loss", "loss"),
    ("final_val_acc", "val acc (%)", "acc"),
    ("test_loss", "test loss", "loss"),
    ("test_acc", "test acc (%)", "acc"),
    ("best_epoch", "best val epoch", "epochs"),
    # Only runs with test-time augmentation have these (same weights, one view): shown when some run has them.
    ("val_acc_no_tta", "val acc, no TTA (%)", "acc"),
    ("test_acc_no_tta", "test acc, no TTA (%)", "acc"),
)
OPTIONAL_METRICS = frozenset({"val_acc_no_tta", "test_acc_no_tta"})


@dataclass
class RunRecord:
    variant: str
    seed: int
    run_dir: Path
    status: str
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in DONE

    def epochs(self) -> list[dict[str, float]]:
        return read_csv(self.run_dir / "epochs.csv")

    def steps(self) -> list[dict[str, float]]:
        return read_csv(self.run_dir / "steps.csv")


@dataclass
class VariantStats:
    variant: str
    runs: list[RunRecord]
    params: int | None
    macs: int | None
    stats: dict[str, tuple[float, float, int]]  # key -> (mean, std (nan when n < 2), n)

    @property
    def n_ok(self) -> int:
        return sum(r.ok for r in self.runs)


def mean_std(values: list[float]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan, 0
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else math.nan  # sample std (n-1)
    return mean, std, len(vals)


def load_runs(sweep_dir: str | Path) -> list[RunRecord]:
    """Runs of a sweep in spec order (from sweep_status.json), with their summaries where they exist."""
    sweep_dir = Path(sweep_dir)
    status_path = sweep_dir / "sweep_status.json"
    rows = json.loads(status_path.read_text()).get("runs", []) if status_path.is_file() else []
    records = []
    for row in rows:
        run_dir = sweep_dir / row["run_dir"]
        summary: dict[str, Any] = {}
        if (run_dir / "summary.json").is_file():
            try:
                summary = json.loads((run_dir / "summary.json").read_text())
            except ValueError:  # corrupt: the run counts as not finished (and is re-run by the sweep)
                summary = {"status": "unreadable", "error": "summary.json is unreadable"}
        status = summary.get("status") or row.get("status") or "missing"
        records.append(RunRecord(row["variant"], int(row["seed"]), run_dir, status,
                                 row.get("error") or summary.get("error"), summary))
    return records


def aggregate(records: list[RunRecord]) -> list[VariantStats]:
    """Group runs by variant (first-seen order); statistics over the runs that finished (completed or stopped)."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.variant, []).append(r)
    out = []
    for variant, runs in groups.items():
        ok = [r for r in runs if r.ok]
        with_summary = [r for r in runs if r.summary]
        params = with_summary[0].summary.get("params") if with_summary else None
        macs = with_summary[0].summary.get("macs") if with_summary else None
        stats = {key: mean_std([r.summary.get(key) for r in ok]) for key, _, _ in METRICS}
        out.append(VariantStats(variant, runs, params, macs, stats))
    return out


def best_variant(variants: list[VariantStats]) -> VariantStats | None:
    """Best by mean final VALIDATION accuracy: the test set never picks anything."""
    scored = [v for v in variants if v.stats["final_val_acc"][2] > 0]
    return max(scored, key=lambda v: v.stats["final_val_acc"][0]) if scored else None


def fmt_stat(stat: tuple[float, float, int], kind: str) -> str:
    mean, std, n = stat
    if n == 0:
        return "-"
    scale, digits = {"acc": (100.0, 2), "loss": (1.0, 4), "seconds": (1.0, 1), "epochs": (1.0, 1)}[kind]
    if kind == "epochs" and float(mean).is_integer() and (math.isnan(std) or std == 0):
        return f"{mean:.0f}"  # an epoch count all seeds share is an integer: "10", not "10.0" or "10.0 ± 0.0"
    m = f"{mean * scale:.{digits}f}"
    return m if math.isnan(std) else f"{m} ± {std * scale:.{digits}f}"


def separated(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    """Are two (mean, std, n) told apart? Only with >= 2 seeds each and mean ± std intervals that do not overlap:
    with one seed the spread is unknown, so any difference is anecdotal."""
    (ma, sa, na), (mb, sb, nb) = a, b
    return na > 1 and nb > 1 and abs(ma - mb) > sa + sb


def _fmt_count(v: int | None, unit: float = 1.0, suffix: str = "") -> str:
    return "-" if v is None else f"{v / unit:,.0f}{suffix}" if unit == 1.0 else f"{v / unit:,.1f}{suffix}"


def table_rows(variants: list[VariantStats]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows (strings) shared by the Markdown and HTML tables."""
    shown = [m for m in METRICS if m[0] not in OPTIONAL_METRICS or any(v.stats[m[0]][2] for v in variants)]
    header = ["variant", "runs ok / n", "params", "MACs", *(title for _, title, _ in shown)]
    rows = []
    for v in variants:
        rows.append([v.variant, f"{v.n_ok} / {len(v.runs)}", _fmt_count(v.params), _fmt_count(v.macs, 1e6, " M"),
                     *(fmt_stat(v.stats[key], kind) for key, _, kind in shown)])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


TABLE_CAPTION = ("Final-epoch numbers (not the best epoch's) as mean ± sample std (n-1) over the seeds that "
                 "finished; 'runs ok / n' counts them. Accuracies in %. 'best val epoch' is the epoch of the "
                 "highest validation accuracy.")


REFERENCE_CAPTION = ("Theirs: the report's number as printed (its protocol; several reports selected on the test "
                     "set). Ours: final-epoch mean ± sample std over seeds. Ordering: each pair of rows the report "
                     "ranks is checked; a pair is inconclusive when our mean ± std intervals overlap or a variant "
                     "has one seed.")


def _metric_key(ref: dict[str, Any]) -> str:
    return "final_val_acc" if ref.get("metric") == "val_acc" else "test_acc"


def _groups(ref: dict[str, Any]) -> list[list[str]]:
    """The report's ranking as best-first groups of labels (ties share a group)."""
    rows = ref.get("rows") or {}
    if rows:
        values = sorted(set(rows.values()), reverse=True)
        return [[k for k, v in rows.items() if v == value] for value in values]
    return [[g] if isinstance(g, str) else list(g) for g in ref.get("order", [])]


def ordering_verdict(variants: list[VariantStats], ref: dict[str, Any]) -> str:
    """Does our ranking agree with the report's? Pairwise: agree, disagree or inconclusive."""
    key = _metric_key(ref)
    stats = {v.variant: v.stats[key] for v in variants}
    groups = _groups(ref)
    counts = {"agree": 0, "disagree": 0, "inconclusive": 0}
    same_order = pairs = 0
    for i, better in enumerate(groups):
        for worse in groups[i + 1:]:
            for a in better:
                for b in worse:
                    sta, stb = stats.get(a, (0, 0, 0)), stats.get(b, (0, 0, 0))
                    if not sta[2] or not stb[2]:
                        continue
                    pairs += 1
                    same_order += sta[0] > stb[0]
                    decided = separated(sta, stb)
                    counts["inconclusive" if not decided else "agree" if sta[0] > stb[0] else "disagree"] += 1
    if not pairs:
        return "ordering vs the report: nothing to compare (fewer than two ranked variants finished)"
    word = "disagrees" if counts["disagree"] else "inconclusive" if counts["inconclusive"] else "agrees"
    detail = ", ".join(f"{n} {k}" for k, n in counts.items())
    return (f"ordering vs the report: **{word}** ({detail}, of {pairs} ranked pairs; by means alone, "
            f"{same_order} of {pairs} pairs in the report's order)")


def reference_rows(variants: list[VariantStats], ref: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per report row: theirs beside ours (the report's metric), with the difference."""
    metric, key = ref.get("metric", "test_acc"), _metric_key(ref)
    by_label = {v.variant: v for v in variants}
    rows_ref = ref.get("rows") or {}
    rank = {lb: i + 1 for i, group in enumerate(_groups(ref)) for lb in group}
    header = ["variant", f"theirs {metric.replace('_', ' ')} (%)", "their rank", f"ours {metric.replace('_', ' ')} (%)",
              "our rank (by mean)", "ours - theirs", "seeds"]
    ours = {lb: by_label[lb].stats[key] for lb in rank if lb in by_label and by_label[lb].stats[key][2]}
    our_rank = {lb: 1 + sum(o[0] > st[0] for o in ours.values()) for lb, st in ours.items()}
    out = []
    for lb in rank:
        theirs = rows_ref.get(lb)
        st = ours.get(lb)
        diff = "-" if st is None or theirs is None else f"{100 * st[0] - theirs:+.2f}"
        out.append([lb, "-" if theirs is None else f"{theirs:.2f}", str(rank[lb]),
                    "-" if st is None else fmt_stat(st, "acc"), str(our_rank.get(lb, "-")), diff,
                    "0" if st is None else str(st[2])])
    return header, out


def read_spec(sweep_dir: Path) -> dict[str, Any]:
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.is_file():
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def reference_markdown(variants: list[VariantStats], ref: dict[str, Any]) -> list[str]:
    if not ref:
        return []
    title = f"## Ours beside theirs: {ref['report']}, {ref['table']}"
    md = [title, "", REFERENCE_CAPTION, "", markdown_table(*reference_rows(variants, ref)), "",
          ordering_verdict(variants, ref) + ".", ""]
    if ref.get("reading"):
        md += [f"Reading of the report's protocol: {ref['reading']}", ""]
    return md


def failures(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if not r.ok]


def write_results(sweep_dir: str | Path) -> tuple[Path, Path]:
    """results.md and results.csv in the sweep directory (atomic)."""
    sweep_dir = Path(sweep_dir)
    records = load_runs(sweep_dir)
    variants = aggregate(records)
    header, rows = table_rows(variants)
    md = [f"# Sweep {sweep_dir.name}", "", TABLE_CAPTION, "", markdown_table(header, rows), ""]
    best = best_variant(variants)
    if best is not None:
        md += [f"Best variant by mean final validation accuracy: **{best.variant}** "
               f"({fmt_stat(best.stats['final_val_acc'], 'acc')} %).", ""]
    md += reference_markdown(variants, read_spec(sweep_dir).get("report_table") or {})
    bad = failures(records)
    if bad:
        md += ["Runs that did not finish:", ""]
        md += [f"- {r.variant} seed {r.seed}: {r.status}" + (f" ({r.error})" if r.error else "") for r in bad]
        md.append("")
    md_path = sweep_dir / "results.md"
    atomic_write_text(md_path, "\n".join(md))

    cols = ["variant", "n_runs", "n_ok", "params", "macs"]
    for key, _, _ in METRICS:
        cols += [f"{key}_mean", f"{key}_std", f"{key}_n"]
    table = []
    for v in variants:
        row: list[Any] = [v.variant, len(v.runs), v.n_ok, v.params, v.macs]
        for key, _, _ in METRICS:
            mean, std, n = v.stats[key]
            row += [None if math.isnan(mean) else mean, None if math.isnan(std) else std, n]
        table.append(dict(zip(cols, row)))
    csv_path = sweep_dir / "results.csv"
    write_csv(csv_path, table, cols)
    return md_path, csv_path


def sweep_items(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The paragraphs and tables of a sweep's report section (its figures are added by the caller)."""
    from cifarlab.manifest import table, text

    sweep_dir = Path(sweep_dir)
    records = load_runs(sweep_dir)
    variants = aggregate(records)
    items = []
    spec = read_spec(sweep_dir)
    if spec:
        items += [text(f"{key.capitalize()}: {spec[key]}") for key in ("description", "reference") if spec.get(key)]
        counts = f"{len(variants)} variant{'s' * (len(variants) != 1)}, {len(records)} run{'s' * (len(records) != 1)}"
        items.append(text(f"Scale: {spec.get('scale') or 'as in base'}; seeds: {spec.get('seeds')}; {counts}."))
    best = best_variant(variants)
    if best is not None:
        items.append(text(f"Best variant by mean final validation accuracy: {best.variant} "
                          f"({fmt_stat(best.stats['final_val_acc'], 'acc')} %)."))
    items.append(table("Results per variant", TABLE_CAPTION, *table_rows(variants)))
    ref = spec.get("report_table") or {}
    if ref:
        items.append(table(f"Ours beside theirs: {ref['report']}, {ref['table']}", REFERENCE_CAPTION,
                           *reference_rows(variants, ref), numeric=False))
        items.append(text(f"{ref['report']}, {ref['table']} (table 'Ours beside theirs'): "
                          + ordering_verdict(variants, ref).replace("**", "") + "."))
        if ref.get("reading"):
            items.append(text(f"Reading of the report's protocol: {ref['reading']}"))
    bad = failures(records)
    if bad:
        items.append(table("Runs that did not finish", "Failed, diverged, interrupted or missing runs; they are "
                           "left out of the means above. Re-running the sweep retries failed and missing runs "
                           "and resumes interrupted ones.", ["variant", "seed", "status", "error"],
                           [[r.variant, r.seed, r.status, r.error or ""] for r in bad], numeric=False))
    return items
