"""Network structure: ``cifarlab.models.summary.layer_table`` (layer, type, output shape, trainable params) as
Markdown, CSV and a figure (parameters per layer on a log axis, output shape next to each bar)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cifarlab.analysis.explain.plots import new_figure, save_png
from cifarlab.io import atomic_write_text, write_csv
from cifarlab.models import create
from cifarlab.models.summary import count_macs, format_layer_table, layer_table

MAX_BARS = 50


def _shape(row: dict[str, Any]) -> str:
    return "x".join(map(str, row["output_shape"][1:])) if row["output_shape"] else "-"


def group_rows(rows: list[dict[str, Any]], limit: int = MAX_BARS) -> list[dict[str, Any]]:
    """At most ``limit`` rows: leaf rows as they are, else merged by the first 2 (then 1) name components
    (params summed, the group's last output shape)."""
    for depth in (None, 2, 1):
        groups: dict[str, dict[str, Any]] = {}
        for r in rows:
            key = r["name"] if depth is None else ".".join(r["name"].split(".")[:depth])
            g = groups.setdefault(key, {"name": key, "type": r["type"], "output_shape": r["output_shape"],
                                        "params": 0})
            if depth is not None and g["type"] != r["type"]:
                g["type"] = "block"
            g["params"] += r["params"]
            g["output_shape"] = r["output_shape"]
        if len(groups) <= limit:
            return list(groups.values())
    return list(groups.values())[:limit]


def write_structure(model_name: str, options: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``structure.md``, ``structure.csv`` and ``structure.png`` in ``folder``; returns the totals."""
    model = create(model_name, **options)
    rows = layer_table(model)
    total = sum(r["params"] for r in rows)
    macs = count_macs(model)
    header = ["layer", "type", "output shape", "params"]
    body = [[r["name"], r["type"], _shape(r), r["params"]] for r in rows]
    md = [f"# Structure of {model_name}", "", f"Options: {options or 'defaults'}; {total:,} trainable parameters; "
          f"{macs / 1e6:,.1f} M MACs per 32x32 image. Output shapes are per image (C x H x W).", "",
          "| " + " | ".join(header) + " |", "| --- | --- | --- | ---: |"]
    md += [f"| {n} | {t} | {s} | {p:,} |" for n, t, s, p in body]
    md += ["", "```", format_layer_table(rows), "```", ""]
    atomic_write_text(folder / "structure.md", "\n".join(md))
    write_csv(folder / "structure.csv", [dict(zip(header, r)) for r in body], header)

    shown = group_rows(rows)
    fig = new_figure(10, max(3.0, 0.24 * len(shown) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    params = np.array([max(r["params"], 0) for r in shown], dtype=float)
    y = np.arange(len(shown))
    ax.barh(y, np.where(params > 0, params, np.nan), color="#4c72b0")
    ax.set_xscale("log")
    ax.set_xlim(1, max(10.0, params.max() * 30))
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r['name']} ({r['type']})" for r in shown], fontsize=7)
    ax.invert_yaxis()
    for i, r in enumerate(shown):
        ax.text(max(params[i], 1) * 1.15, i, f"{_shape(r)}  {r['params']:,}", va="center", fontsize=6.5)
    ax.set_xlabel("trainable parameters (log scale); text: output shape C x H x W, parameters")
    ax.grid(axis="x", alpha=0.3)
    grouped = " (layers grouped by block)" if len(shown) < len(rows) else ""
    ax.set_title(f"{model_name}: {total:,} parameters, {macs / 1e6:,.1f} M MACs{grouped}", fontsize=10)
    save_png(fig, folder / "structure.png")
    return {"model": model_name, "params": total, "macs": macs, "layers": len(rows)}


__all__ = ["group_rows", "write_structure"]
