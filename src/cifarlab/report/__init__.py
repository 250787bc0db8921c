"""Reports: figures (matplotlib Agg) and self-contained HTML + Markdown pages of sweeps and runs."""

from cifarlab.report.build import build_report

__all__ = ["build_report"]
