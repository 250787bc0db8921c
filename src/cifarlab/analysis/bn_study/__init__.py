"""``cifarlab bn-study``: how BatchNorm helps optimisation (Santurkar et al., NeurIPS 2018) on the course VGG-A.

Modules: ``probes`` (Fig. 4: loss landscape, gradient predictiveness, effective beta-smoothness), ``ics``
(Definition 2.1), ``noisy_bn`` (Algorithm 1), ``settings`` (the study's own config schema), ``study`` (the
resumable driver), ``plots``, ``interpret`` (summary table + interpretation derived from the numbers), ``cli``.
Submodules are imported where used (the package itself imports nothing: no torch for the CLI parser).
"""
