"""cifarlab: a fast, honest, reproducible CIFAR-10 lab.

The Python API (docs/api.md) has the CLI's names: ``from cifarlab import train, load_config, make_config, evaluate,
sweep, build_report, explain, bn_study, list_models, create_model, list_presets, synthetic_data``. They load on first
use (``cifarlab.api``), so ``import cifarlab`` imports no torch.
"""

from __future__ import annotations

from typing import Any

from cifarlab.version import __version__

API = ("bn_study", "build_report", "create_model", "evaluate", "explain", "list_models", "list_presets", "load_config",
       "make_config", "sweep", "synthetic_data", "train")
__all__ = [*API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in API:
        from cifarlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'cifarlab' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
