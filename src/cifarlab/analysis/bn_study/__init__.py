"""``cifarlab bn-study``: how BatchNorm helps optimisation (Santurkar et al., NeurIPS 2018) on the course VGG-A.

Modules: ``probes`` (Fig. 4: loss landscape, gradient predictiveness, effective beta-smoothness), ``ics``
(Definition 2.1), ``noisy_bn`` (Algorithm 1), ``settings`` (the study's own config schema), ``study`` (the
resumable driver), ``plots``, ``interpret`` (summary table + interpretation derived from the numbers), ``cli``.
"""

_EXPORTS = {name: module for module, names in {  # submodule -> its public names
    "ics": "ics_measure layer_groups", "noisy_bn": "NoisyBatchNorm add_bn_noise make_noisy_bn",
    "probes": "ProbeResult eta_grid loss_band probe_step",
}.items() for name in names.split()}


def __getattr__(name: str) -> object:
    """Import the submodule of ``name`` on first use: importing the package (e.g. for its command-line parser)
    must not import torch."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
