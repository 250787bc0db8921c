"""Experiments: sweeps over configs (grid axes, named variants, seeds), run locally or on Ray, compared in
tables (mean ± std over seeds). See docs/experiments.md."""

from cifarlab.experiments.compare import aggregate, load_runs, mean_std, write_results
from cifarlab.experiments.sweep import (
    RunPlan,
    SweepResult,
    SweepSpec,
    expand,
    list_experiment_presets,
    load_spec,
    parse_spec,
    run_sweep,
)

__all__ = [
    "RunPlan",
    "SweepResult",
    "SweepSpec",
    "aggregate",
    "expand",
    "list_experiment_presets",
    "load_runs",
    "load_spec",
    "mean_std",
    "parse_spec",
    "run_sweep",
    "write_results",
]
