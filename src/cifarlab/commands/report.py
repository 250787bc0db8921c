"""``cifarlab report``: one self-contained HTML page (+ Markdown) of the producer folders under DIR."""

from __future__ import annotations

import argparse


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="one self-contained HTML page (+ Markdown) of every sweep and run under DIR",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  cifarlab report runs/sweeps/activations-quick --out activations.html",
    )
    p.add_argument("dir", metavar="DIR", help="folder holding sweeps and/or run directories")
    p.add_argument("--out", metavar="FILE.html", help="HTML file to write [default: DIR/report.html]; the "
                   "Markdown twin gets the same name with .md")
    p.add_argument("--title", help="page title")
    return p


def cmd_report(args: argparse.Namespace) -> int:
    from cifarlab.report.build import build_report

    html_path, md_path = build_report(args.dir, args.out, args.title)
    print(f"report: {html_path}  (Markdown: {md_path})")
    return 0
