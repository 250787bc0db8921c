"""Experiments: sweeps over configs (grid axes, named variants, seeds), run locally or on Ray, compared in
tables (mean ± std over seeds). See docs/experiments.md."""

_EXPORTS = {name: module for module, names in {  # submodule -> its public names
    "compare": "aggregate load_runs mean_std write_results",
    "sweep": "RunPlan SweepResult SweepSpec expand list_experiment_presets load_spec parse_spec run_sweep",
}.items() for name in names.split()}


def __getattr__(name: str) -> object:
    """Import the submodule of ``name`` on first use: importing the package (e.g. for its command-line parser)
    must not import torch."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
