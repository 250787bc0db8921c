"""Settings of ``cifarlab bn-study``: a small dataclass schema of its own, two scales, validated like RunConfig.

Layers: scale defaults (``quick`` or ``paper``) < ``-c FILE.yaml`` < dotted ``key=value`` overrides; the
type checks and unknown-key errors reuse ``cifarlab.config``'s builder so messages read the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cifarlab.config import build_section, deep_merge, parse_override, read_yaml, to_dict
from cifarlab.errors import ConfigError

PARTS: tuple[str, ...] = ("train", "band", "landscape", "ics", "noisy")
MODELS: tuple[str, ...] = ("vgg_a", "vgg_a_bn")


@dataclass
class DataSettings:
    dir: str | None = None  # CIFAR-10 location (None: $CIFARLAB_DATA or ~/.cache/cifarlab)
    synthetic: int = 0  # > 0: use this many random images instead of CIFAR-10 (tests, smoke runs)
    val_size: int = 1000  # validation carved from the training images (make_splits, stratified)
    subset: int | None = 5000  # training images kept (stratified); None: all remaining
    test_subset: int | None = 2000  # test images (evaluated once per run, at its end); None: all 10k
    split_seed: int = 0
    normalize: Literal["cifar10", "half"] = "cifar10"


@dataclass
class TrainSettings:
    """Part ``train``: VGG-A vs VGG-A+BN at each LR (the paper's Fig. 1: SGD, lr 0.1 and 0.5)."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lrs: list[float] = field(default_factory=lambda: [0.1, 0.5])
    steps: int = 300
    momentum: float = 0.0  # the paper's plain SGD
    weight_decay: float = 0.0
    augment: bool = False  # the paper's Fig. 1 is without augmentation


@dataclass
class BandSettings:
    """Part ``band``: the course protocol, training-loss band over learning rates."""

    optimizer: Literal["sgd", "adam"] = "adam"
    lrs: list[float] = field(default_factory=lambda: [1e-3, 2e-3, 1e-4, 5e-4])
    steps: int = 300  # the train part's budget (7.7 epochs of 5k images); plateau exits are reported
    smooth: int = 5  # moving-average window of the plotted band (1: none); CSV holds the raw values


@dataclass
class LandscapeSettings:
    """Part ``landscape``: Fig. 4 probes, Hessian curvature and ICS on the same SGD runs (the same weights)."""

    lr: float = 0.1  # the paper's; chosen before any quick-scale result (an earlier 0.3 was chosen after)
    steps: int = 800
    probe_every: int = 50  # Fig. 4 probe every k-th step (step 0 included)
    # Step sizes eta = [eta_low .. eta_high] x lr. "log": log-spaced, reaching well below the LR, where the
    # probe is local; "paper": the paper's linear grid [0.5 .. 4] x lr (eta_low/eta_high are then ignored).
    grid: Literal["log", "paper"] = "log"
    eta_low: float = 1e-3
    eta_high: float = 4.0
    eta_count: int = 9
    momentum: float = 0.0


@dataclass
class CurvatureSettings:
    """Hessian of the batch loss on the landscape runs: top eigenvalue, g'Hg/|g|^2, |Hg|/|g|, trace, density."""

    every: int = 100  # 0: off
    power_iters: int = 50
    power_tol: float = 1e-3
    trace_probes: int = 4
    # Where an SLQ eigenvalue density is taken: fractions of landscape.steps, rounded down to a multiple of `every`.
    density_at: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.875])
    density_steps: int = 40


@dataclass
class ICSSettings:
    """Part ``ics``: Definition 2.1 at chosen layers (1-based among conv/linear layers, >= 2), measured on the
    landscape part's runs (the same training), over the whole run."""

    every: int = 50
    layers: list[int] = field(default_factory=lambda: [3, 6, 9])


@dataclass
class NoisySettings:
    """Part ``noisy``: VGG-A + noisy BN (Algorithm 1) trained like VGG-A + BN (compared with both)."""

    lr: float = 0.1
    steps: int = 300
    n_mu: float = 0.5
    n_sigma: float = 1.25
    r_mu: float = 0.1
    r_sigma: float = 0.1
    # Noise strengths: each multiplies n_mu, n_sigma - 1, r_mu and r_sigma (1.0: the values above).
    strengths: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    activation_unit: int = 3  # conv unit whose activation distribution is recorded (the paper's Fig. 2)
    activation_every: int = 10


@dataclass
class ExecutorSettings:
    """Where the study's independent trainings run: one after another here, or in parallel as Ray tasks."""

    kind: Literal["auto", "local", "ray"] = "auto"  # auto: Ray at paper scale when it is installed, else local
    address: str | None = None  # join this Ray cluster (outputs must be on a file system every node sees)
    cpus_per_run: float = 1.0
    gpus_per_run: float | None = None  # None: 1/4 GPU per run when Ray sees GPUs (VGG-A at batch 128 leaves
    #                                    an H100 mostly idle, so four trainings share one), else 0


@dataclass
class StudySettings:
    scale: Literal["quick", "paper"] = "quick"
    # Every training runs once per seed; comparisons are paired by seed (the same data order and init seed).
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    threads: int = 2  # torch threads of every training here and in each Ray task (0: torch's default); recorded
    device: str = "auto"
    parts: list[str] = field(default_factory=lambda: list(PARTS))
    width_mult: float = 0.125  # VGG-A channel/FC width multiplier (1.0 = the course VGG-A)
    batch_size: int = 128
    eval_batch_size: int = 500
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    band: BandSettings = field(default_factory=BandSettings)
    landscape: LandscapeSettings = field(default_factory=LandscapeSettings)
    curvature: CurvatureSettings = field(default_factory=CurvatureSettings)
    ics: ICSSettings = field(default_factory=ICSSettings)
    noisy: NoisySettings = field(default_factory=NoisySettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)


# The paper's protocol at full size: full VGG-A, 45k training images, 15,000 steps (SGD lr 0.1, batch 128).
PAPER: dict[str, Any] = {
    "scale": "paper",
    "width_mult": 1.0,
    "threads": 0,
    "eval_batch_size": 1000,
    "data": {"val_size": 5000, "subset": None, "test_subset": None},
    "train": {"steps": 15000},
    "band": {"steps": 7040},  # 20 epochs of 45k at batch 128 (the course's 20 epochs)
    "landscape": {"steps": 15000, "probe_every": 100},
    "curvature": {"every": 1000},
    "ics": {"every": 500},
    "noisy": {"steps": 15000, "strengths": [0.5, 1.0, 2.0], "activation_every": 100},
}
SCALES: dict[str, dict[str, Any]] = {"quick": {}, "paper": PAPER}


def _need(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"bn-study setting '{key}': got {value!r}, expected {expected}")


def _check_common(s: StudySettings) -> None:
    _need(len(s.parts) > 0 and all(p in PARTS for p in s.parts), "parts", s.parts,
          f"a non-empty subset of {', '.join(PARTS)}")
    _need(len(s.seeds) > 0 and len(set(s.seeds)) == len(s.seeds) and all(x >= 0 for x in s.seeds), "seeds",
          s.seeds, "a non-empty list of distinct seeds >= 0 (5 or more for a verdict with a useful CI)")
    _need(s.threads >= 0, "threads", s.threads, ">= 0 (0: torch's default)")
    _need(s.width_mult > 0, "width_mult", s.width_mult, "> 0")
    _need(s.batch_size >= 2, "batch_size", s.batch_size, ">= 2 (BatchNorm needs a batch)")
    _need(s.eval_batch_size >= 1, "eval_batch_size", s.eval_batch_size, ">= 1")
    _need(s.device == "auto" or s.device.split(":")[0] in ("cpu", "cuda", "mps"), "device", s.device,
          "auto, cpu, cuda, cuda:N or mps")
    d = s.data
    _need(d.synthetic == 0 or d.synthetic >= 20, "data.synthetic", d.synthetic, "0 or >= 20 images")
    _need(0 <= d.val_size < 50000, "data.val_size", d.val_size, "0..49999")
    _need(d.subset is None or d.subset >= s.batch_size, "data.subset", d.subset,
          f"null or >= batch_size ({s.batch_size})")
    _need(d.test_subset is None or 10 <= d.test_subset <= 10000, "data.test_subset", d.test_subset,
          "null or 10..10000")
    ex = s.executor
    _need(ex.cpus_per_run > 0, "executor.cpus_per_run", ex.cpus_per_run, "> 0")
    _need(ex.gpus_per_run is None or ex.gpus_per_run >= 0, "executor.gpus_per_run", ex.gpus_per_run,
          "null (auto) or >= 0")


def _check_parts(s: StudySettings) -> None:
    for key, lrs in (("train.lrs", s.train.lrs), ("band.lrs", s.band.lrs)):
        _need(len(lrs) > 0 and all(lr > 0 for lr in lrs), key, lrs, "a non-empty list of learning rates > 0")
    for key, value in (("train.steps", s.train.steps), ("band.steps", s.band.steps),
                       ("landscape.steps", s.landscape.steps), ("noisy.steps", s.noisy.steps),
                       ("landscape.probe_every", s.landscape.probe_every), ("ics.every", s.ics.every),
                       ("landscape.eta_count", s.landscape.eta_count), ("band.smooth", s.band.smooth),
                       ("noisy.activation_every", s.noisy.activation_every)):
        _need(value >= 1, key, value, "an integer >= 1")
    for key, value in (("landscape.lr", s.landscape.lr), ("noisy.lr", s.noisy.lr)):
        _need(value > 0, key, value, "a learning rate > 0")
    for key, value in (("train.momentum", s.train.momentum), ("landscape.momentum", s.landscape.momentum)):
        _need(0 <= value < 1, key, value, "0 <= momentum < 1")
    _need(s.train.weight_decay >= 0, "train.weight_decay", s.train.weight_decay, ">= 0")
    ls = s.landscape
    _need(0 < ls.eta_low <= ls.eta_high, "landscape.eta_low", ls.eta_low, f"0 < eta_low <= eta_high ({ls.eta_high})")
    _need(len(s.ics.layers) > 0 and all(i >= 2 for i in s.ics.layers), "ics.layers", s.ics.layers,
          "layer indices >= 2 (layer 1 has no earlier layers, so G = G')")


def _check_curvature_noise(s: StudySettings) -> None:
    c = s.curvature
    _need(c.every >= 0, "curvature.every", c.every, ">= 0 (0: off)")
    for key, value in (("curvature.power_iters", c.power_iters), ("curvature.trace_probes", c.trace_probes),
                       ("curvature.density_steps", c.density_steps)):
        _need(value >= 1, key, value, "an integer >= 1")
    _need(c.power_tol > 0, "curvature.power_tol", c.power_tol, "> 0")
    _need(all(0 <= x < 1 for x in c.density_at), "curvature.density_at", c.density_at,
          "fractions of landscape.steps in [0, 1)")
    n = s.noisy
    _need(n.n_mu >= 0 and n.r_mu >= 0 and n.r_sigma >= 0, "noisy", to_dict(n), "n_mu, r_mu, r_sigma >= 0")
    _need(n.n_sigma >= 1, "noisy.n_sigma", n.n_sigma, ">= 1")
    _need(len(n.strengths) > 0 and all(x > 0 for x in n.strengths), "noisy.strengths", n.strengths,
          "a non-empty list of noise multipliers > 0")
    _need(1 <= n.activation_unit <= 8, "noisy.activation_unit", n.activation_unit, "1..8 (VGG-A's conv units)")


def validate(s: StudySettings) -> StudySettings:
    _check_common(s)
    _check_parts(s)
    _check_curvature_noise(s)
    return s


def load_settings(scale: str = "quick", files: list[str] | None = None, overrides: list[str] | None = None,
                  extra: dict[str, Any] | None = None) -> StudySettings:
    """Scale defaults < YAML files < ``extra`` (CLI flags) < dotted overrides; validated."""
    if scale not in SCALES:
        raise ConfigError(f"unknown bn-study scale '{scale}'; valid: {', '.join(SCALES)}")
    merged: dict[str, Any] = dict(SCALES[scale])
    merged["scale"] = scale
    for path in files or []:
        merged = deep_merge(merged, read_yaml(path))
    merged = deep_merge(merged, extra or {})
    for text in overrides or []:
        merged = deep_merge(merged, parse_override(text))
    try:
        built = build_section(StudySettings, merged)
    except ConfigError as exc:
        raise ConfigError(f"bn-study: {exc}") from None
    return validate(built)


def settings_from_dict(values: dict[str, Any]) -> StudySettings:
    return validate(build_section(StudySettings, values))


__all__ = ["MODELS", "PARTS", "SCALES", "StudySettings", "load_settings", "settings_from_dict", "to_dict"]
