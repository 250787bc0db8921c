"""``cifarlab explain``: see what a trained model learned.

Modules: ``layers`` (which modules give feature maps; default Grad-CAM layer), ``filters`` (first-layer RGB
filters, deeper filters summarised, feature maps), ``attribution`` (Captum Grad-CAM, saliency, integrated
gradients), ``mistakes`` (confident mistakes, confusion matrix, per-class accuracy), ``surface`` (Li et al. 2018
filter-normalised loss surfaces, interpolation), ``compare`` (two runs' surfaces on one scale), ``structure``
(layer table), ``runs`` (a run's model, weights and data), ``settings``, ``explain`` (the driver), ``cli``.
"""

from cifarlab.analysis.explain.attribution import attribute, mass_inside
from cifarlab.analysis.explain.compare import compare_runs
from cifarlab.analysis.explain.explain import FIGURES, explain_run
from cifarlab.analysis.explain.layers import default_feature_layers, default_target_layer, resolve_layer
from cifarlab.analysis.explain.mistakes import confident_mistakes, confusion_matrix
from cifarlab.analysis.explain.settings import PARTS, ExplainSettings
from cifarlab.analysis.explain.surface import (
    evaluate_state,
    filter_normalized_direction,
    interpolate,
    loss_grid,
    loss_line,
)

__all__ = [
    "FIGURES", "PARTS", "ExplainSettings", "attribute", "compare_runs", "confident_mistakes", "confusion_matrix",
    "default_feature_layers", "default_target_layer", "evaluate_state", "explain_run",
    "filter_normalized_direction", "interpolate", "loss_grid", "loss_line", "mass_inside", "resolve_layer",
]
