"""``cifarlab explain``: see what a trained model learned.

Modules: ``layers`` (which modules give feature maps; default Grad-CAM layer), ``filters`` (first-layer RGB
filters, deeper filters summarised, feature maps), ``attribution`` (Captum Grad-CAM, saliency, integrated
gradients), ``mistakes`` (confident mistakes, confusion matrix, per-class accuracy), ``surface`` (Li et al. 2018
filter-normalised loss surfaces, interpolation), ``compare`` (two runs' surfaces on one scale), ``structure``
(layer table), ``runs`` (a run's model, weights and data), ``settings``, ``explain`` (the driver), ``sections`` (what
``cifarlab report`` shows: the folders' manifest.json). The command is cifarlab/commands/explain.py.
"""

_EXPORTS = {name: module for module, names in {  # submodule -> its public names
    "attribution": "attribute mass_inside", "compare": "compare_runs", "explain": "FIGURES explain_run",
    "layers": "default_feature_layers default_target_layer resolve_layer",
    "mistakes": "confident_mistakes confusion_matrix", "settings": "PARTS ExplainSettings",
    "surface": "evaluate_state filter_normalized_direction interpolate loss_grid loss_line",
}.items() for name in names.split()}


def __getattr__(name: str) -> object:
    """Import the submodule of ``name`` on first use: importing the package (e.g. for its command-line parser)
    must not import torch."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
