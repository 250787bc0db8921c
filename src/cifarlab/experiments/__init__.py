"""Experiments: sweeps over configs (grid axes, named variants, seeds), run locally or on Ray, compared in
tables (mean ± std over seeds). See docs/experiments.md.
Submodules are imported where used (the package itself imports nothing: no torch for the CLI parser).
"""
