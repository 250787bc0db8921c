"""``cifarlab bn-study``: how BatchNorm helps optimisation (Santurkar et al., NeurIPS 2018) on the course VGG-A.

Modules: ``probes`` (Fig. 4: loss landscape, gradient predictiveness, effective beta-smoothness), ``ics``
(Definition 2.1), ``callbacks`` (both as engine callbacks), ``curvature`` (Hessian: top eigenvalue, trace,
spectral density), ``findings`` (statistics over seeds and verdicts), ``settings`` (the study's settings),
``study`` (the driver: each training an ordinary run), ``plots``, ``interpret``, ``cli``. Noisy BN (Algorithm
1) is the registered model ``vgg_a_noisy_bn`` (``cifarlab.models.noisy_bn``). Nothing is imported here, so
``cifarlab --help`` does not pay for torch.
"""
