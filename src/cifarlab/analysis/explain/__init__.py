"""``cifarlab explain``: see what a trained model learned.

Modules: ``layers`` (which modules give feature maps; default Grad-CAM layer), ``filters`` (first-layer RGB
filters, deeper filters summarised, feature maps), ``attribution`` (Captum Grad-CAM, saliency, integrated
gradients), ``mistakes`` (confident mistakes, confusion matrix, per-class accuracy), ``surface`` (Li et al. 2018
filter-normalised loss surfaces, interpolation), ``compare`` (two runs' surfaces on one scale), ``structure``
(layer table), ``runs`` (a run's model, weights and data), ``settings``, ``explain`` (the driver), ``sections`` (what
``cifarlab report`` shows: the folders' manifest.json). The command is cifarlab/commands/explain.py.
Submodules are imported where used (the package itself imports nothing: no torch for the CLI parser).
"""
