"""``cifarlab report DIR``: one self-contained HTML page (PNG figures inlined as base64 data: URIs, inline CSS,
no external assets) plus a Markdown twin, with every table and figure of the producer folders under DIR.

Each producer (a sweep, an explain folder, a study) lists what it shows in its ``manifest.json``
(:mod:`cifarlab.manifest`); the report reads manifests and knows no producer's file names. One fallback remains:
a run directory without a manifest (``config.yaml`` + ``summary.json``; its figures are drawn from its files).
"""

from __future__ import annotations

import base64
import html
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError
from cifarlab.experiments.compare import markdown_table
from cifarlab.io import atomic_write_bytes, atomic_write_text
from cifarlab.manifest import Manifest, find_manifests, read_manifest
from cifarlab.plotting import FigureOut
from cifarlab.report.runs import (
    COMPARISON_CAPTION,
    UNFINISHED_HEADER,
    Run,
    compare_runs,
    is_run_dir,
    load_run,
    settings_rows,
    unfinished_rows,
    variant_settings,
)


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
    path: Path
    text: list[str] = field(default_factory=list)  # paragraphs (plain text)
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureOut] = field(default_factory=list)


def _rel(folder: Path, root: Path) -> str:
    return str(folder.relative_to(root) if folder != root else Path(folder.name))


def add_items(sec: Section, m: Manifest, prefix: str = "") -> None:
    """Append a manifest's paragraphs, tables and figures (those whose PNG exists) to ``sec``."""
    for item in m.items:
        if item["kind"] == "text":
            sec.text.append(item["text"])
        elif item["kind"] == "table":
            sec.tables.append(Table(item["title"], item["caption"], item["header"], item["rows"],
                                    item.get("numeric", True)))
        elif (m.folder / item["path"]).is_file():
            png = (m.folder / item["path"]).read_bytes()
            sec.figures.append(FigureOut(prefix + Path(item["path"]).stem, item["title"], item["caption"], png))


def manifest_section(m: Manifest, root: Path) -> Section:
    sec = Section(m.title.replace("{path}", _rel(m.folder, root)), m.folder)
    add_items(sec, m)
    sec.tables[:0] = variant_tables(m, sec)  # what was run, before what came out
    return sec


def collect_sections(root: Path) -> list[Section]:
    """One section per producer folder under ``root`` (path order); ``extends`` manifests join their parent's.
    Stand-alone run directories get a section each, and a folder holding several a comparison section."""
    manifests = find_manifests(root)
    covered = {Path(os.path.normpath(m.folder / c)) for m in manifests for c in m.covers}

    def hidden(folder: Path) -> bool:
        return any(folder == c or c in folder.parents for c in covered)

    sections = {m.folder: manifest_section(m, root) for m in manifests if not m.extends and not hidden(m.folder)}
    runs = [r for r in _standalone_runs(root, hidden) if r.path not in sections]
    for run in runs:
        sections[run.path] = run_section(run, root)
    _add_folder_sections(sections, runs, root)
    for m in (m for m in manifests if m.extends):
        target = Path(os.path.normpath(m.folder / m.extends))
        if target in sections:
            add_items(sections[target], m, prefix=f"{m.folder.name}_")
        elif not hidden(target) and not hidden(m.folder):
            sections[m.folder] = manifest_section(m, root)
    return [sections[k] for k in sorted(sections)]


def _standalone_runs(root: Path, hidden: Any) -> list[Run]:
    """Run directories outside any producer folder (finished or not) that have no manifest of their own."""
    out = []
    for config in sorted(root.rglob("config.yaml")):
        folder = config.parent
        if hidden(folder) or not is_run_dir(folder) or read_manifest(folder) is not None:
            continue
        try:
            out.append(load_run(folder))
        except ValueError as exc:  # a corrupt summary.json: the report goes on without this run, and says so
            print(f"cifarlab: warning: report skips '{folder}': its summary.json is unreadable ({exc})",
                  file=sys.stderr)
    return out


def _add_folder_sections(sections: dict[Path, Section], runs: list[Run], root: Path) -> None:
    """A folder (inside ``root``) with two or more stand-alone runs: how they compare, and which did not finish."""
    by_folder: dict[Path, list[Run]] = {}
    for run in runs:
        if run.path != root:
            by_folder.setdefault(run.path.parent, []).append(run)
    for folder, members in by_folder.items():
        if len(members) < 2:
            continue
        sec = sections.setdefault(folder, Section(f"Runs in {_rel(folder, root)}", folder))
        finished = [r for r in members if r.ok]
        sec.text.append(f"{len(members)} run directories: {len(finished)} finished, "
                        f"{len(members) - len(finished)} not.")
        if finished:
            comp = compare_runs(finished)
            sec.text.append(comp.verdict)
            sec.tables.append(Table("Stand-alone runs compared", COMPARISON_CAPTION, comp.header, comp.rows))
        unfinished = unfinished_rows(members, folder)
        if unfinished:
            sec.tables.append(Table("Runs that did not finish", "Interrupted (no summary.json: the run stopped "
                                    "before its end; 'cifarlab train --resume RUN' continues it), diverged or "
                                    "failed runs; they are left out of the comparison above.",
                                    UNFINISHED_HEADER, unfinished))


def _covered_runs(m: Manifest) -> list[Run]:
    runs = []
    for c in m.covers:
        folder = Path(os.path.normpath(m.folder / c))
        if is_run_dir(folder):
            try:
                runs.append(load_run(folder))
            except ValueError:  # the producer's own table says what is wrong with this run
                continue
    return runs


def variant_tables(m: Manifest, sec: Section) -> list[Table]:
    """The settings of a producer's runs (a sweep's variants): shared ones, and per config those that differ."""
    runs = _covered_runs(m)
    if not runs:
        return []
    shared, header, rows = variant_settings(runs)
    finished = [r for r in runs if r.ok]
    if len(header) > 2 and finished:  # the sweep's best variant, weighed by the same rule as stand-alone runs
        sec.text.append("Weight of the comparison: " + compare_runs(finished).verdict)
    tables = [Table("Settings shared by all runs", "Resolved from each run's config.yaml (image counts from its "
                    "summary.json).", ["setting", "value"], shared)]
    if len(header) > 2:
        tables.append(Table("Settings per variant", "The settings in which the runs differ (besides the seed), "
                            "one row per config, with its seeds.", header, rows))
    return tables


# --- run directories without a manifest ----------------------------------------------------------------------


def _summary_rows(s: dict[str, Any]) -> list[list[str]]:
    from cifarlab.experiments.compare import fmt_stat

    def num(key: str, kind: str) -> str:
        v = s.get(key)
        return "-" if v is None else fmt_stat((float(v), float("nan"), 1), kind)

    def acc(key: str) -> str:
        return "-" if s.get(key) is None else num(key, "acc") + " %"

    return [
        ["status", str(s.get("status", "-")) + (f" ({s['error']})" if s.get("error") else "")],
        ["params", f"{s['params']:,}" if isinstance(s.get("params"), int) else "-"],
        ["MACs", f"{s['macs'] / 1e6:,.1f} M" if isinstance(s.get("macs"), (int, float)) else "-"],
        ["epochs run / planned", f"{s.get('epochs_run', '-')} / {s.get('epochs_planned', '-')}"],
        ["train time", num("train_time_s", "seconds") + " s"], ["time per epoch", num("s_per_epoch", "seconds") + " s"],
        ["final train loss / acc", f"{num('final_train_loss', 'loss')} / {acc('final_train_acc')}"],
        ["final val loss / acc", f"{num('final_val_loss', 'loss')} / {acc('final_val_acc')}"],
        ["test loss / acc", f"{num('test_loss', 'loss')} / {acc('test_acc')}"],
        *([["test acc without TTA", acc("test_acc_no_tta")]] if "test_acc_no_tta" in s else []),
        ["best val epoch", str(s.get("best_epoch", "-"))],
    ]


# One run: the sweep figures' captions ("mean over seeds", "first seed of each variant") do not apply.
RUN_CAPTIONS = {
    "convergence": "Training and validation loss and accuracy per epoch of this run (1 run, so no band; "
                   "validation: the held-out split carved from the training set).",
    "lr": "Learning rate at every optimizer step of this run (from steps.csv).",
    "confusion": "Test confusion matrix of this run (rows: true class, in % of it) and its per-class "
                 "test accuracy (1 run).",
}


def run_section(run: Run, root: Path) -> Section:
    """A run directory: its settings, its summary (or how far it got) and its figures."""
    from dataclasses import replace

    from cifarlab.experiments.figures import run_figures

    s = run.summary
    sec = Section(f"Run {_rel(run.path, root)}" + ("" if run.ok else f" ({run.state()})"), run.path)
    seed = run.get("train.seed")
    sec.text.append(f"1 run (seed {seed}): the numbers below are its own final-epoch values (no mean, no spread)."
                    if s else f"1 run (seed {seed}), {run.state()}: it wrote no summary.json, so it has no test "
                    "numbers; 'cifarlab train --resume RUN' continues it.")
    sec.tables.append(Table("Settings", "Resolved from the run's config.yaml (image counts and amp as the run "
                            "used them, from its summary.json).", ["setting", "value"], settings_rows(run)))
    if s:
        sec.tables.append(Table("Summary", "Final-epoch numbers of this run; the test set is evaluated once, "
                                f"with the {s.get('test_weights', 'last')} weights.", ["metric", "value"],
                                _summary_rows(s)))
        sec.figures = [replace(f, caption=RUN_CAPTIONS.get(f.name, f.caption)) for f in run_figures(run.path)]
    return sec


# --- rendering ------------------------------------------------------------------------------------------------


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2.5rem}
table{border-collapse:collapse;margin:.5rem 0 .3rem;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f0f0f0}
th.n,td.n{text-align:right;font-variant-numeric:tabular-nums}td.n{white-space:nowrap}.wide{overflow-x:auto}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption,.caption{color:#555;font-size:.85rem;max-width:60rem}
nav li{margin:.15rem 0}
"""


# A number as the report prints it: "1,234", "81.20 ± 0.40", "3 / 10", "[80.1, 82.3]", "12.5 %", "0.7 M".
NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?( ?(%|M|s))?")
NUMERIC_CELL = re.compile(rf"\[?{NUMBER.pattern}((, | ± | / ){NUMBER.pattern})?\]?( %)?")


def numeric_columns(table: Table) -> list[bool]:
    """Per column: do all its cells hold numbers ("-" for none)? Those are right-aligned, header included."""
    cols = list(zip(*table.rows)) if table.rows else [() for _ in table.header]
    return [any(c != "-" for c in col) and all(c == "-" or NUMERIC_CELL.fullmatch(str(c).strip()) for c in col)
            for col in cols]


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
                         '<div class="wide"><table class="report-table"><thead><tr>')  # wide tables scroll
            cls = [' class="n"' if num else "" for num in numeric_columns(table)]
            parts += [f"<th{c}>{e(h)}</th>" for c, h in zip(cls, table.header)]
            parts.append("</tr></thead><tbody>")
            for row in table.rows:
                parts.append("<tr>" + "".join(f"<td{c}>{e(str(v))}</td>" for c, v in zip(cls, row)) + "</tr>")
            parts.append(f'</tbody></table></div><p class="caption">{e(table.caption)}</p>')
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


ASSETS_SUFFIX = ".assets"  # FILE.assets/: the Markdown twin and its PNGs (.gitignore: *.assets/)


def assets_dir(html_path: Path) -> Path:
    return html_path.with_name(html_path.stem + ASSETS_SUFFIX)


def build_report(root: str | Path, out: str | Path | None = None, title: str | None = None) -> tuple[Path, Path]:
    """Write ``out`` (default ``<root>/report.html``) and, in ``<stem>.assets/`` beside it, its Markdown twin
    ``<stem>.md`` and the figures as PNGs: one page plus one folder, nothing else. Returns (html_path, md_path)."""
    root = Path(root)
    if not root.is_dir():
        raise CifarlabError(f"report: '{root}' is not a directory")
    sections = collect_sections(root)
    if not sections:
        raise CifarlabError(f"report: no sweeps, studies or runs (manifest.json or summary.json) under '{root}'")
    html_path = Path(out) if out else root / "report.html"
    if html_path.suffix.lower() not in (".html", ".htm"):
        html_path = html_path.with_suffix(".html")
    title = title or f"cifarlab report: {root.resolve().name}"
    atomic_write_text(html_path, render_html(sections, title))

    # The Markdown twin links PNG files (Markdown viewers rarely show multi-MB data URIs well).
    assets = assets_dir(html_path)
    paths: dict[int, str] = {}
    for i, sec in enumerate(sections):
        for fig in sec.figures:
            path = assets / "figures" / f"{i:02d}_{fig.name}.png"
            atomic_write_bytes(path, fig.png)
            paths[id(fig)] = os.path.relpath(path, assets)
    written = {assets / "figures" / Path(p).name for p in paths.values()}
    for old in (assets / "figures").glob("[0-9][0-9]_*.png"):  # an earlier report's figures would mislead
        if old not in written:
            old.unlink()
    md_path = assets / f"{html_path.stem}.md"
    atomic_write_text(md_path, render_markdown(sections, title, paths))
    return html_path, md_path


def report_counts(html_text: str) -> dict[str, Any]:
    """Numbers a test or a check script can compare against: tables, figures, data: images."""
    return {"tables": html_text.count("<table "), "figures": html_text.count("<figure>"),
            "data_images": html_text.count('src="data:image/png;base64,')}
