"""``cifarlab bn-study``: how BatchNorm helps optimisation (Santurkar et al., NeurIPS 2018) on the course VGG-A.

Modules: ``probes`` (Fig. 4: loss landscape, gradient predictiveness, effective beta-smoothness), ``ics``
(Definition 2.1), ``noisy_bn`` (Algorithm 1), ``settings`` (the study's own config schema), ``study`` (the
resumable driver), ``plots``, ``interpret`` (summary table + interpretation derived from the numbers), ``cli``.
"""

from cifarlab.analysis.bn_study.ics import ics_measure, layer_groups
from cifarlab.analysis.bn_study.noisy_bn import NoisyBatchNorm, add_bn_noise, make_noisy_bn
from cifarlab.analysis.bn_study.probes import ProbeResult, eta_grid, loss_band, probe_step

__all__ = [
    "NoisyBatchNorm", "ProbeResult", "add_bn_noise", "eta_grid", "ics_measure", "layer_groups", "loss_band",
    "make_noisy_bn", "probe_step",
]
