"""``cifarlab report DIR``: one self-contained HTML page (PNG figures inlined as base64 data: URIs, inline CSS,
no external assets) plus a Markdown twin, with every table and figure of the producer folders under DIR.

Each producer (a sweep, an explain folder, a study) lists what it shows in its ``manifest.json``
(:mod:`cifarlab.manifest`); the report reads manifests and knows no producer's file names. One fallback remains:
a run directory without a manifest (``config.yaml`` + ``summary.json``; its figures are drawn from its files).
"""

from __future__ import annotations

import base64
import html
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError
from cifarlab.experiments.compare import markdown_table
from cifarlab.io import atomic_write_bytes, atomic_write_text
from cifarlab.manifest import Manifest, find_manifests, read_manifest
from cifarlab.plotting import FigureOut


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
    return sec


def collect_sections(root: Path) -> list[Section]:
    """One section per producer folder under ``root`` (path order); ``extends`` manifests join their parent's."""
    manifests = find_manifests(root)
    covered = {Path(os.path.normpath(m.folder / c)) for m in manifests for c in m.covers}

    def hidden(folder: Path) -> bool:
        return any(folder == c or c in folder.parents for c in covered)

    sections = {m.folder: manifest_section(m, root) for m in manifests if not m.extends and not hidden(m.folder)}
    for summary in sorted(root.rglob("summary.json")):
        run = summary.parent
        if run not in sections and not hidden(run) and read_manifest(run) is None and (run / "config.yaml").is_file():
            try:
                sections[run] = run_section(run, root)
            except ValueError as exc:  # a corrupt summary.json: the report goes on without this run, and says so
                print(f"cifarlab: warning: report skips '{run}': its summary.json is unreadable ({exc})",
                      file=sys.stderr)
    for m in (m for m in manifests if m.extends):
        target = Path(os.path.normpath(m.folder / m.extends))
        if target in sections:
            add_items(sections[target], m, prefix=f"{m.folder.name}_")
        elif not hidden(target) and not hidden(m.folder):
            sections[m.folder] = manifest_section(m, root)
    return [sections[k] for k in sorted(sections)]


# --- fallbacks: folders without a manifest ------------------------------------------------------------------


def run_section(run_dir: Path, root: Path) -> Section:
    """A run directory: its summary table and figures drawn from its files (until the trainer writes a manifest)."""
    from cifarlab.experiments.compare import fmt_stat
    from cifarlab.experiments.figures import run_figures

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
    sec = Section(f"Run {_rel(run_dir, root)}", run_dir)
    sec.tables.append(Table("Summary", "Final-epoch numbers of this run (accuracies in %); the test set is "
                            f"evaluated once, with the {s.get('test_weights', 'last')} weights.",
                            ["metric", "value"], rows))
    sec.figures = run_figures(run_dir)
    return sec


# --- rendering ------------------------------------------------------------------------------------------------


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
    sections = collect_sections(root)
    if not sections:
        raise CifarlabError(f"report: no sweeps, studies or runs (manifest.json or summary.json) under '{root}'")
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
