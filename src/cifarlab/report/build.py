"""``cifarlab report DIR``: one self-contained HTML page (PNG figures inlined as base64 data: URIs, inline CSS,
no external assets) plus a Markdown twin, with every table and figure of the sweeps and runs under DIR.

A sweep is a folder with ``sweep_status.json``; a single run is a folder with ``summary.json`` outside any sweep.
Figures are recomputed from the run files, so a report is always current.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError
from cifarlab.experiments.compare import (
    TABLE_CAPTION,
    aggregate,
    best_variant,
    failures,
    fmt_stat,
    load_runs,
    markdown_table,
    table_rows,
)
from cifarlab.io import atomic_write_bytes, atomic_write_text
from cifarlab.report.figures import FigureOut, run_figures, sweep_figures


@dataclass
class Table:
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    numeric: bool = True  # numbers: right-aligned, never wrapped ("81.2 ± 0.4" must stay on one line)


@dataclass
class Section:
    title: str
    kind: str  # "sweep" or "run"
    path: Path
    text: list[str] = field(default_factory=list)  # paragraphs (plain text)
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureOut] = field(default_factory=list)


def is_bn_study(folder: Path) -> bool:
    """A `cifarlab bn-study` output folder (its summary.json describes a study, not one training run)."""
    return (folder / "settings.yaml").is_file() and (folder / "summary.json").is_file() and \
        "interpretation" in json.loads((folder / "summary.json").read_text())


def find_targets(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Sweep folders, bn-study folders and stand-alone run folders under ``root`` (root itself may be any)."""
    sweeps = sorted({p.parent for p in root.rglob("sweep_status.json")})
    studies = sorted({p.parent for p in root.rglob("summary.json") if is_bn_study(p.parent)})
    runs = []
    for summary in sorted(root.rglob("summary.json")):
        run = summary.parent
        if not any(s == run or s in run.parents for s in [*sweeps, *studies]):
            runs.append(run)
    return sweeps, studies, runs


BN_FIGURES = [
    ("train/curves.png", "VGG-A vs VGG-A+BN training", "Training loss and accuracy vs step at each learning rate."),
    ("band/band.png", "Loss band over learning rates", "At each step, min and max of the training loss over the "
     "learning rates (course protocol); standard VGG-A green, with BN red."),
    ("landscape/landscape.png", "Santurkar et al. Fig. 4", "Loss landscape, gradient predictiveness and effective "
     "β-smoothness along the gradient, η in [0.5, 4] x lr, probed every k steps."),
    ("ics/ics.png", "Internal covariate shift (Def. 2.1)", "‖G − G′‖₂ and cos(G, G′) per probed layer."),
    ("noisy/curves.png", "Noisy BN (Algorithm 1)", "BN followed by random per-step shift/scale noise vs BN and "
     "standard VGG-A."),
]


def bn_study_section(study_dir: Path, root: Path) -> Section:
    from cifarlab.analysis.bn_study.interpret import summary_tables

    s = json.loads((study_dir / "summary.json").read_text())
    rel = study_dir.relative_to(root) if study_dir != root else Path(study_dir.name)
    sec = Section(f"BatchNorm study {rel} ({s.get('scale', '?')} scale)", "bn-study", study_dir)
    sec.text.append("Interpretation, generated from the numbers in the tables: " + "; ".join(s["interpretation"]))
    for i, (header, rows) in enumerate(summary_tables(s)):
        title = "Per model" if i == 0 else "Noisy BN"
        sec.tables.append(Table(title, "Means over probed steps; β = effective smoothness; accuracies on the "
                                "test set, evaluated once at the end of each training.", header, rows))
    for rel_png, title, caption in BN_FIGURES:
        png = study_dir / rel_png
        if png.is_file():
            sec.figures.append(FigureOut(Path(rel_png).parent.name, title, caption, png.read_bytes()))
    return sec


def sweep_section(sweep_dir: Path, root: Path) -> Section:
    records = load_runs(sweep_dir)
    variants = aggregate(records)
    header, rows = table_rows(variants)
    title = f"Sweep {sweep_dir.relative_to(root) if sweep_dir != root else sweep_dir.name}"
    sec = Section(title, "sweep", sweep_dir)
    spec_path = sweep_dir / "sweep.yaml"
    if spec_path.is_file():
        import yaml

        spec = yaml.safe_load(spec_path.read_text()) or {}
        for key in ("description", "reference"):
            if spec.get(key):
                sec.text.append(f"{key.capitalize()}: {spec[key]}")
        sec.text.append(f"Scale: {spec.get('scale') or 'as in base'}; seeds: {spec.get('seeds')}; "
                        f"{len(variants)} variants, {len(records)} runs.")
    best = best_variant(variants)
    if best is not None:
        sec.text.append(f"Best variant by mean final validation accuracy: {best.variant} "
                        f"({fmt_stat(best.stats['final_val_acc'], 'acc')} %).")
    sec.tables.append(Table("Results per variant", TABLE_CAPTION, header, rows))
    bad = failures(records)
    if bad:
        sec.tables.append(Table("Runs that did not finish", "Failed, diverged, interrupted or missing runs; they are "
                                "left out of the means above. Re-running the sweep retries failed and missing runs "
                                "and resumes interrupted ones.", ["variant", "seed", "status", "error"],
                                [[r.variant, str(r.seed), r.status, r.error or ""] for r in bad], numeric=False))
    sec.figures = sweep_figures(sweep_dir)
    return sec


def run_section(run_dir: Path, root: Path) -> Section:
    s = json.loads((run_dir / "summary.json").read_text())

    def num(key: str, kind: str) -> str:
        v = s.get(key)
        return "-" if v is None else fmt_stat((float(v), float("nan"), 1), kind)

    rows = [
        ["model", str(s.get("model", "-"))],
        ["status", str(s.get("status", "-")) + (f" ({s['error']})" if s.get("error") else "")],
        ["params", f"{s['params']:,}" if isinstance(s.get("params"), int) else "-"],
        ["MACs", f"{s['macs'] / 1e6:,.1f} M" if isinstance(s.get("macs"), (int, float)) else "-"],
        ["epochs run / planned", f"{s.get('epochs_run', '-')} / {s.get('epochs_planned', '-')}"],
        ["train time (s)", num("train_time_s", "seconds")], ["s/epoch", num("s_per_epoch", "seconds")],
        ["final train loss / acc (%)", f"{num('final_train_loss', 'loss')} / {num('final_train_acc', 'acc')}"],
        ["final val loss / acc (%)", f"{num('final_val_loss', 'loss')} / {num('final_val_acc', 'acc')}"],
        ["test loss / acc (%)", f"{num('test_loss', 'loss')} / {num('test_acc', 'acc')}"],
        *([["test acc without TTA (%)", num("test_acc_no_tta", "acc")]] if "test_acc_no_tta" in s else []),
        ["best val epoch", str(s.get("best_epoch", "-"))],
    ]
    rel = run_dir.relative_to(root) if run_dir != root else Path(run_dir.name)
    sec = Section(f"Run {rel}", "run", run_dir)
    sec.tables.append(Table("Summary", "Final-epoch numbers of this run (accuracies in %); the test set is "
                            f"evaluated once, with the {s.get('test_weights', 'last')} weights.",
                            ["metric", "value"], rows))
    sec.figures = run_figures(run_dir)
    add_explain(sec, run_dir)  # `cifarlab explain` outputs, when RUN_DIR/explain/ exists (block below)
    return sec


# --- cifarlab explain (RUN_DIR/explain/ in a run's section; `explain --compare` folders as sections) -----------


def _explain_rows(e: dict[str, Any]) -> list[list[str]]:
    def get(*keys: str) -> Any:
        v: Any = e
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    def num(v: Any, digits: int = 4) -> str:
        return "-" if not isinstance(v, (int, float)) else f"{v:.{digits}f}"

    rows = [["explained weights", f"{Path(str(e.get('checkpoint', '-'))).name}, epoch {e.get('epoch', '-')}"
             + (" (EMA/SWA average)" if e.get("averaged_weights") else "")]]
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


def add_explain(sec: Section, run_dir: Path) -> None:
    """Append the numbers, structure table and figures of ``RUN_DIR/explain/`` to a run's section."""
    from cifarlab.analysis.explain.explain import check_figures

    folder = run_dir / "explain"
    if not (folder / "explain.json").is_file():
        return
    e = json.loads((folder / "explain.json").read_text())
    sec.tables.append(Table("What the model learned (cifarlab explain)", "Numbers from explain/explain.json: "
                            "surfaces and interpolation on fixed training batches in eval mode (Li et al. 2018 "
                            "filter-normalised directions); accuracy on the test split.", ["metric", "value"],
                            _explain_rows(e), numeric=False))
    structure = folder / "structure.csv"
    if structure.is_file():
        import csv

        rows = list(csv.reader(structure.read_text().splitlines()))
        if 1 < len(rows) <= 41:
            sec.tables.append(Table(f"Structure of {e.get('model', '?')}", "Every layer as called in the forward "
                                    "pass: output shape for one image, trainable parameters.", rows[0],
                                    [[*r[:3], f"{int(r[3]):,}"] for r in rows[1:]], numeric=False))
    # explain's confusion matrix repeats the run's own unless its predictions differ (other weights, or the run
    # used test-time augmentation, which explain does not): then both are shown.
    run_confusion = json.loads((run_dir / "summary.json").read_text()).get("confusion")
    repeated = run_confusion is not None and (e.get("mistakes") or {}).get("confusion") == run_confusion
    for path, title, caption in check_figures(folder):
        if repeated and path.name == "confusion.png":
            continue
        sec.figures.append(FigureOut(f"explain_{path.stem}", f"{title}: {run_dir.name}", caption, path.read_bytes()))


def find_explain_compares(root: Path) -> list[Path]:
    """Folders written by ``cifarlab explain --compare`` under ``root``."""
    found = []
    for path in sorted(root.rglob("compare.json")):
        try:
            if json.loads(path.read_text()).get("kind") == "cifarlab-explain-compare":
                found.append(path.parent)
        except (OSError, ValueError, AttributeError):
            continue
    return found


def explain_compare_section(folder: Path, root: Path) -> Section:
    from cifarlab.analysis.explain.compare import check_compare_figures

    c = json.loads((folder / "compare.json").read_text())
    rel = folder.relative_to(root) if folder != root else Path(folder.name)
    sec = Section(f"Loss surfaces compared: {' vs '.join(c.get('labels', []))} ({rel})", "explain-compare", folder)

    def num(v: Any) -> str:
        return "-" if not isinstance(v, (int, float)) else f"{v:.4f}"

    lo, hi = (c.get("display_range") or [None, None])[:2]
    sec.text.append(f"Directions: {c.get('directions', '?')}. Shared scale for both runs: {num(lo)} .. {num(hi)}.")
    rows = [[r["label"], num(r["grid"].get("loss_centre")), num(r["grid"].get("loss_max")),
             num(r["grid"].get("max_rise_half_span")), num(r["line"].get("curvature_1d"))]
            for r in c.get("per_run", [])]
    sec.tables.append(Table("Surface numbers", "Loss at the trained weights, 2-D maximum, largest rise within half "
                            "the span, 1-D curvature; same coordinates, seed and batch count for both runs.",
                            ["run", "loss at centre", "2-D max", "max rise (r = span/2)", "1-D curvature"], rows))
    for path, title, caption in check_compare_figures(folder):
        sec.figures.append(FigureOut(path.stem, title, caption, path.read_bytes()))
    return sec


# --- end cifarlab explain ----------------------------------------------------------------------------------------


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2.5rem}
table{border-collapse:collapse;margin:.5rem 0 .3rem;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}table.num td{white-space:nowrap}table.text td{text-align:left}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption,.caption{color:#555;font-size:.85rem;max-width:60rem}
nav li{margin:.15rem 0}
"""


def _anchor(i: int) -> str:
    return f"s{i}"


def render_html(sections: list[Section], title: str) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if not sections:
        parts.append("<p>No sweeps or runs found.</p>")
    parts.append("<nav><ul>")
    parts += [f'<li><a href="#{_anchor(i)}">{e(s.title)}</a></li>' for i, s in enumerate(sections)]
    parts.append("</ul></nav>")
    t_no = f_no = 0
    for i, sec in enumerate(sections):
        parts.append(f'<section id="{_anchor(i)}"><h2>{e(sec.title)}</h2>')
        parts += [f"<p>{e(p)}</p>" for p in sec.text]
        for table in sec.tables:
            t_no += 1
            parts.append(f"<h3>Table {t_no}. {e(table.title)}</h3>"
                         f'<table class="{"num" if table.numeric else "text"}"><thead><tr>')
            parts += [f"<th>{e(h)}</th>" for h in table.header]
            parts.append("</tr></thead><tbody>")
            for row in table.rows:
                parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
            parts.append(f'</tbody></table><p class="caption">{e(table.caption)}</p>')
        for fig in sec.figures:
            f_no += 1
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f"<figure><h3>Figure {f_no}. {e(fig.title)}</h3>"
                         f'<img alt="{e(fig.title)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{e(fig.caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(sections: list[Section], title: str, figure_paths: dict[int, str]) -> str:
    lines = [f"# {title}", ""]
    t_no = f_no = 0
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        for p in sec.text:
            lines += [p, ""]
        for table in sec.tables:
            t_no += 1
            lines += [f"### Table {t_no}. {table.title}", "", markdown_table(table.header, table.rows), "",
                      f"*{table.caption}*", ""]
        for fig in sec.figures:
            f_no += 1
            lines += [f"### Figure {f_no}. {fig.title}", "", f"![{fig.title}]({figure_paths[id(fig)]})", "",
                      f"*{fig.caption}*", ""]
    return "\n".join(lines)


def build_report(root: str | Path, out: str | Path | None = None, title: str | None = None) -> tuple[Path, Path]:
    """Write ``out`` (default ``<root>/report.html``) and its Markdown twin (same stem, ``.md``; figures in
    ``<stem>_figures/``). Returns (html_path, md_path)."""
    root = Path(root)
    if not root.is_dir():
        raise CifarlabError(f"report: '{root}' is not a directory")
    sweeps, studies, runs = find_targets(root)
    if not sweeps and not studies and not runs:
        raise CifarlabError(f"report: no sweeps (sweep_status.json) or runs (summary.json) under '{root}'")
    sections = ([sweep_section(s, root) for s in sweeps] + [bn_study_section(s, root) for s in studies]
                + [run_section(r, root) for r in runs])
    sections += [explain_compare_section(c, root) for c in find_explain_compares(root)]  # cifarlab explain
    html_path = Path(out) if out else root / "report.html"
    if html_path.suffix.lower() not in (".html", ".htm"):
        html_path = html_path.with_suffix(".html")
    title = title or f"cifarlab report: {root.resolve().name}"
    atomic_write_text(html_path, render_html(sections, title))

    # The Markdown twin links PNG files (Markdown viewers rarely show multi-MB data URIs well).
    fig_dir = html_path.with_name(html_path.stem + "_figures")
    paths: dict[int, str] = {}
    for i, sec in enumerate(sections):
        for fig in sec.figures:
            path = fig_dir / f"{i:02d}_{fig.name}.png"
            atomic_write_bytes(path, fig.png)
            paths[id(fig)] = os.path.relpath(path, html_path.parent)
    md_path = html_path.with_suffix(".md")
    atomic_write_text(md_path, render_markdown(sections, title, paths))
    return html_path, md_path


def report_counts(html_text: str) -> dict[str, Any]:
    """Numbers a test or a check script can compare against: tables, figures, data: images."""
    return {"tables": html_text.count("<table "), "figures": html_text.count("<figure>"),
            "data_images": html_text.count('src="data:image/png;base64,')}
