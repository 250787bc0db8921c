"""The one config schema of cifarlab, and how it is loaded.

A run is described by a ``RunConfig`` (nested dataclasses with plain values). It is built in layers:

    defaults  <  --preset NAME (shipped YAML)  <  -c FILE.yaml  <  dotted overrides (``optim.lr=0.01``)

Every layer is validated against the dataclasses below: unknown keys, wrong types and impossible values give
one ``ConfigError`` that names the key, the value and what is expected. Each section checks its own values
(``OptimConfig.check`` ...); ``validate`` adds the checks that span sections.

Component names (``loss.name``, ``optim.name``, ``sched.name``) and the section keys specific to each are
declared here (``LOSS_KEYS``, ``OPTIMIZER_KEYS``, ``SCHEDULE_KEYS``), so this bottom-layer module checks them
without importing the engine (or torch). The registries next to the code (``engine/losses.py``, ``engine/optim.py``,
``engine/schedules.py``) are built against these declarations: registering an undeclared name, or other keys,
fails at import, and tests/test_registries.py checks that every declared name is registered.

Optimizer-specific settings follow the optimizer (``merge_layer``): a layer (the preset, one ``-c`` file, or all
dotted overrides together) that sets ``optim.name`` to another optimizer resets the settings of the layers below
it that are specific to other optimizers (``optim.nesterov`` of an SGD preset when switching to adam). Then a
setting that does not apply to the chosen optimizer must be at its default, else one error names it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from cifarlab.errors import ConfigError


@dataclass
class DataConfig:
    dir: str | None = None  # where CIFAR-10 is looked for / downloaded; None: $CIFARLAB_DATA or ~/.cache/cifarlab
    download: bool = True  # allow downloading from the official URL when no local copy is found
    val_size: int = 5000  # validation images carved from the 50k training set (stratified, seeded)
    split_seed: int = 0  # seed of the train/val split and of the subset draw (independent of train.seed)
    subset: int | None = None  # train on only N of the remaining training images (stratified), for quick runs
    test_subset: int | None = None  # evaluate on only N test images (stratified); smoke tests only
    normalize: Literal["cifar10", "half"] = "cifar10"  # true CIFAR-10 mean/std, or 0.5/0.5 as the course code

    def check(self) -> None:
        _need(0 <= self.val_size < 50000, "data.val_size", self.val_size, "0 <= val_size < 50000")
        _need(0 <= self.split_seed < 2**63, "data.split_seed", self.split_seed, "an integer in 0 .. 2**63 - 1")
        _need(self.subset is None or self.subset >= 10, "data.subset", self.subset, "null or an integer >= 10")
        _need(self.subset is None or self.subset <= 50000 - self.val_size, "data.subset", self.subset,
              f"at most 50000 - data.val_size = {50000 - self.val_size}")
        _need(self.test_subset is None or 10 <= self.test_subset <= 10000, "data.test_subset", self.test_subset,
              "null or 10..10000")


@dataclass
class AugmentConfig:
    crop_padding: int = 4  # random crop after padding by this many pixels; 0 disables
    pad_mode: Literal["reflect", "zeros"] = "reflect"
    flip: bool = True  # random horizontal flip
    flip_mode: Literal["random", "alternate"] = "random"  # alternate: each image flipped in every other epoch
    cutout: int = 0  # side of a random square set to zero (after normalisation: the mean); 0 disables
    # Batch-level mixing (engine/mixing.py): each batch is paired with itself reversed; targets become soft.
    mixup_alpha: float = 0.0  # mixup: x = lam*x + (1-lam)*x[::-1], lam ~ Beta(alpha, alpha); 0 disables
    cutmix_alpha: float = 0.0  # cutmix: paste a box of x[::-1], lam = kept-area fraction; 0 disables
    mix_prob: float = 1.0  # probability that a batch is mixed (with both on, mixup or cutmix 50/50)

    def check(self) -> None:
        _need(0 <= self.crop_padding <= 16, "augment.crop_padding", self.crop_padding, "0..16")
        _need(0 <= self.cutout <= 32, "augment.cutout", self.cutout, "0..32")
        _need(self.mixup_alpha >= 0, "augment.mixup_alpha", self.mixup_alpha, ">= 0 (0 disables)")
        _need(self.cutmix_alpha >= 0, "augment.cutmix_alpha", self.cutmix_alpha, ">= 0 (0 disables)")
        _need(0 <= self.mix_prob <= 1, "augment.mix_prob", self.mix_prob, "0 <= mix_prob <= 1")


@dataclass
class ModelConfig:
    name: str = "quick_cnn"  # see `cifarlab models`
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of the model (width_mult, activation...)


# name -> the keys of its section specific to it (see the module docstring); registration order = listing order.
LOSS_KEYS: dict[str, tuple[str, ...]] = {
    "cross_entropy": (), "label_smoothing": (), "nll": (), "focal": ("focal_gamma", "focal_alpha"),
    "mse": ("mse_on",), "bce": (), "multilabel_soft_margin": (),
}
OPTIMIZER_KEYS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov"), "adam": ("betas", "eps"), "adamw": ("betas", "eps"),
    "rmsprop": ("alpha", "eps"), "adagrad": ("eps",), "adadelta": ("rho", "eps"),
    "scratch_sgd": ("momentum", "nesterov"), "signum": ("momentum",),
    "muon": ("momentum", "nesterov", "muon_momentum", "muon_ns_steps", "head_lr_mult"),
}
SCHEDULE_KEYS: dict[str, tuple[str, ...]] = {
    "constant": (), "step": ("step_size", "gamma"), "multistep": ("milestones", "gamma"),
    "exponential": ("gamma",),
    "plateau": ("plateau_factor", "plateau_patience", "plateau_threshold", "plateau_threshold_mode", "plateau_cooldown",
                "min_lr"),
    "cosine": ("min_lr",), "warmup_cosine": ("min_lr", "warmup_epochs"),
    "warmup_linear": ("min_lr", "warmup_epochs"), "linear": ("min_lr", "warmup_epochs"),
    "cosine_restarts": ("t_0", "t_mult", "min_lr"), "onecycle": ("pct_start",),
}


def _declared(key: str, name: object, declared: dict[str, tuple[str, ...]]) -> None:
    if not (isinstance(name, str) and name in declared):
        choices = ", ".join(repr(n) for n in declared)
        raise ConfigError(f"config key '{key}': got {name!r} ({type(name).__name__}), expected one of {choices}")


@dataclass
class LossConfig:
    # Every loss takes int64 class indices or float (B, 10) probability rows (mixup/cutmix); see docs/strategies.md.
    name: str = "cross_entropy"  # see engine/losses.py: list_losses()
    label_smoothing: float = 0.0  # eps: targets become (1-eps)*target + eps/10 (any loss; > 0 for label_smoothing)
    focal_gamma: float = 2.0  # focal: -alpha_y * (1-p_y)^gamma * log p_y; gamma 0 is cross-entropy
    focal_alpha: float | list[float] | None = None  # focal: null, one weight, or one weight per class (10)
    mse_on: Literal["logits", "softmax"] = "softmax"  # mse: squared error of logits or of softmax vs one-hot

    def check(self) -> None:
        _declared("loss.name", self.name, LOSS_KEYS)
        ls, alpha = self.label_smoothing, self.focal_alpha
        _need(0 <= ls < 1, "loss.label_smoothing", ls, "0 <= x < 1")
        _need(self.name != "label_smoothing" or ls > 0, "loss.label_smoothing", ls,
              "> 0 when loss.name is label_smoothing")
        _need(self.focal_gamma >= 0, "loss.focal_gamma", self.focal_gamma, ">= 0")
        _need(alpha is None or (isinstance(alpha, float) and alpha > 0)
              or (isinstance(alpha, list) and len(alpha) == 10 and all(w >= 0 for w in alpha)),
              "loss.focal_alpha", alpha, "null, a number > 0, or a list of 10 class weights >= 0")


@dataclass
class OptimConfig:
    name: str = "sgd"  # see engine/optim.py: list_optimizers(); each declares the settings below specific to it
    lr: float = 0.05
    momentum: float = 0.9  # sgd, scratch_sgd; signum: beta of m = beta*m + (1-beta)*g
    nesterov: bool = False  # sgd, scratch_sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw
    eps: float | None = None  # adam/adamw/rmsprop/adagrad/adadelta; null: torch's default of each (1e-8, 1e-8,
    #                           1e-8, 1e-10, 1e-6): adadelta's step scales with sqrt(eps), one value does not fit all
    weight_decay: float = 5e-4  # torch semantics: added to the gradient (sgd, adam, ...), decoupled (adamw)
    grad_clip: float = 0.0  # clip the global gradient norm to this value; 0 disables
    alpha: float = 0.99  # rmsprop: smoothing constant of the squared-gradient average
    rho: float = 0.9  # adadelta: smoothing constant
    l1: float = 0.0  # adds l1 * sum|w| to the training loss
    l2: float = 0.0  # adds l2/2 * sum w^2 to the training loss (through the gradient: never decoupled)
    no_decay_bn_bias: bool = False  # exclude parameters with ndim <= 1 (BN weights/biases, biases) from decay/l1/l2
    bn_bias_lr_mult: float = 1.0  # LR multiplier of the parameters with ndim <= 1 (BN weights/biases, biases)
    bn_bias_wd_mult: float = 1.0  # weight-decay multiplier of that group (1/bn_bias_lr_mult: same decay per step)
    lookahead_k: int = 0  # Lookahead: sync slow weights every k optimizer steps; 0 disables
    lookahead_alpha: float = 0.5  # Lookahead: slow += alpha * (fast - slow)
    # Lookahead ramp (airbench): alpha goes from 1 (plain steps) at step 0 to lookahead_alpha at the last step,
    # as 1 - (1 - lookahead_alpha) * (step / total)^3: no averaging early, strong averaging as the LR decays.
    lookahead_ramp: bool = False
    muon_momentum: float = 0.6  # muon: Nesterov momentum of the filters' Muon step (SGD groups use momentum)
    muon_ns_steps: int = 3  # muon: Newton-Schulz iterations orthogonalising the momentum
    head_lr_mult: float = 1.0  # muon: LR multiplier of the 2-D (Linear) weights, which take SGD steps

    def check(self) -> None:
        _declared("optim.name", self.name, OPTIMIZER_KEYS)
        _need(self.lr > 0, "optim.lr", self.lr, "a learning rate > 0")
        _need(0 <= self.momentum < 1, "optim.momentum", self.momentum, "0 <= momentum < 1")
        _need(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _need(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, ">= 0 (0 disables)")
        _need(all(0 <= b < 1 for b in self.betas), "optim.betas", list(self.betas), "two numbers in [0, 1)")
        _need(self.eps is None or self.eps > 0, "optim.eps", self.eps, "null or > 0")
        _need(0 <= self.alpha < 1, "optim.alpha", self.alpha, "0 <= alpha < 1")
        _need(0 <= self.rho < 1, "optim.rho", self.rho, "0 <= rho < 1")
        _need(self.l1 >= 0, "optim.l1", self.l1, ">= 0 (0 disables)")
        _need(self.l2 >= 0, "optim.l2", self.l2, ">= 0 (0 disables)")
        _need(self.bn_bias_lr_mult > 0, "optim.bn_bias_lr_mult", self.bn_bias_lr_mult, "> 0")
        _need(0 <= self.muon_momentum < 1, "optim.muon_momentum", self.muon_momentum, "0 <= momentum < 1")
        _need(1 <= self.muon_ns_steps <= 20, "optim.muon_ns_steps", self.muon_ns_steps, "an integer in 1..20")
        _need(self.head_lr_mult > 0, "optim.head_lr_mult", self.head_lr_mult, "> 0")
        _need(self.lookahead_k >= 0, "optim.lookahead_k", self.lookahead_k, ">= 0 (0 disables)")
        _need(0 < self.lookahead_alpha <= 1, "optim.lookahead_alpha", self.lookahead_alpha, "0 < alpha <= 1")
        self.check_applicable()
        _need(not (self.nesterov and self.momentum == 0), "optim.nesterov", self.nesterov,
              "false unless optim.name is sgd, scratch_sgd or muon with momentum > 0")

    def check_applicable(self) -> None:
        """Each setting specific to other optimizers (their registry keys) must keep its default."""
        defaults = OptimConfig()
        for key, users in optimizer_key_owners().items():
            value, default = getattr(self, key), getattr(defaults, key)
            if self.name not in users and value != default:
                raise ConfigError(
                    f"config key 'optim.{key}': {_yaml(value)} applies to {_or(users)} only (optim.name is "
                    f"'{self.name}'); leave optim.{key} out (or set optim.{key}={_yaml(default)}), or use "
                    f"optim.name={users[0]}")


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # see engine/schedules.py: list_schedules()
    interval: Literal["auto", "step", "epoch"] = "auto"  # auto: per epoch for step/multistep/exponential/plateau
    warmup_epochs: float = 0.0  # linear warm-up from ~0 to optim.lr (all but onecycle; > 0 for warmup_*)
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step/multistep: decay factor; exponential: factor per epoch
    milestones: list[int] = field(default_factory=list)  # multistep: epochs at which the LR is multiplied by gamma
    min_lr: float = 0.0  # cosine/warmup_*/cosine_restarts: floor; plateau: lowest LR
    warmup_start: float = 0.0  # the warm-up starts at this fraction of optim.lr (airbench: 0.2), then rises linearly
    pct_start: float = 0.25  # onecycle: fraction of training spent increasing the LR
    t_0: int = 10  # cosine_restarts: epochs of the first cycle
    t_mult: int = 1  # cosine_restarts: each cycle is t_mult times longer than the previous one
    plateau_factor: float = 0.1  # plateau: LR multiplied by this when validation loss stalls
    plateau_patience: int = 5  # plateau: epochs without improvement tolerated; the next one reduces the LR
    plateau_threshold: float = 1e-4  # plateau: improvement means val_loss < best * (1 - threshold) (rel mode)
    plateau_threshold_mode: Literal["rel", "abs"] = "rel"  # plateau: abs: improvement means val_loss < best - threshold
    plateau_cooldown: int = 0  # plateau: epochs after a reduction during which bad epochs are not counted

    def check(self) -> None:
        _declared("sched.name", self.name, SCHEDULE_KEYS)
        m = self.milestones
        _need(self.warmup_epochs >= 0, "sched.warmup_epochs", self.warmup_epochs, ">= 0")
        _need(self.step_size >= 1, "sched.step_size", self.step_size, ">= 1")
        _need(0 < self.gamma <= 1, "sched.gamma", self.gamma, "0 < gamma <= 1")
        _need(0 <= self.warmup_start < 1, "sched.warmup_start", self.warmup_start, "0 <= fraction of optim.lr < 1")
        _need(0 < self.pct_start < 1, "sched.pct_start", self.pct_start, "0 < pct_start < 1")
        _need(self.name not in ("warmup_cosine", "warmup_linear") or self.warmup_epochs > 0, "sched.warmup_epochs",
              self.warmup_epochs, f"> 0 when sched.name is {self.name}")
        _need(all(x >= 1 for x in m) and all(m0 < m1 for m0, m1 in itertools.pairwise(m)), "sched.milestones", m,
              "increasing epochs >= 1, e.g. [30, 60, 80]")
        _need(self.name != "multistep" or len(m) > 0, "sched.milestones", m,
              "at least one epoch when sched.name is multistep")
        _need(self.t_0 >= 1, "sched.t_0", self.t_0, "an integer >= 1 (epochs)")
        _need(self.t_mult >= 1, "sched.t_mult", self.t_mult, "an integer >= 1")
        _need(0 < self.plateau_factor < 1, "sched.plateau_factor", self.plateau_factor, "0 < factor < 1")
        _need(self.plateau_patience >= 0, "sched.plateau_patience", self.plateau_patience, ">= 0")
        _need(self.plateau_threshold >= 0, "sched.plateau_threshold", self.plateau_threshold, ">= 0")
        _need(self.plateau_cooldown >= 0, "sched.plateau_cooldown", self.plateau_cooldown, ">= 0 (epochs)")


@dataclass
class EarlyStoppingConfig:
    patience: int = 0  # epochs without improvement of `monitor` before stopping; 0 disables
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    min_delta: float = 0.0

    def check(self) -> None:
        _need(self.patience >= 0, "train.early_stopping.patience", self.patience, ">= 0")


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int | None = None  # train this many optimizer steps instead of train.epochs (last epoch partial)
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"  # auto (cuda if present, else cpu), cpu, cuda, cuda:N, mps
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA and on native-bf16 CPUs, else off (fp32)
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (pays off on GPUs for long runs)
    deterministic: bool = True  # deterministic kernels (CPU runs are bit-reproducible)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    test_weights: Literal["last", "best"] = "last"  # weights evaluated on the test set at the end
    log_every: int = 20  # steps between progress-bar refreshes (each one syncs the device)
    val_every: int = 1  # validate every N epochs and after the last (short runs with TTA: validation is costly)
    grad_accum_steps: int = 1  # micro-batches of batch_size per optimizer step (effective batch = product)
    ema_decay: float = 0.0  # EMA of weights and BN buffers, used for validation/test; 0 disables
    swa_start_epoch: int | None = None  # SWA: average the weights at the end of this epoch (1-based) and later ones
    swa_lr: float | None = None  # SWA: constant LR from swa_start_epoch on (null: keep the schedule)
    tta: Literal["none", "flip", "flip_shift"] = "none"  # test-time augmentation of validation and test
    tta_shift: int = 1  # flip_shift: pixels of the diagonal shifts (+s,+s) and (-s,-s)
    # Selective TTA: only images whose plain-view confidence (max softmax) is below this get the other views;
    # null: every image gets every view.
    tta_confidence: float | None = None

    def check(self) -> None:
        self.early_stopping.check()
        swa = self.swa_start_epoch
        for key in ("epochs", "batch_size", "eval_batch_size", "log_every", "grad_accum_steps"):
            _need(getattr(self, key) >= 1, f"train.{key}", getattr(self, key), "an integer >= 1")
        _need(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "0 <= decay < 1 (0 disables)")
        _need(swa is None or 1 <= swa <= self.epochs, "train.swa_start_epoch", swa,
              f"null or 1..train.epochs ({self.epochs})")
        _need(self.val_every >= 1, "train.val_every", self.val_every, ">= 1")
        _need(self.max_steps is None or self.max_steps >= 1, "train.max_steps", self.max_steps,
              "null or an integer >= 1")
        _need(0 <= self.seed < 2**63, "train.seed", self.seed, "an integer in 0 .. 2**63 - 1")
        _need(self.swa_lr is None or self.swa_lr > 0, "train.swa_lr", self.swa_lr, "null or a learning rate > 0")
        _need(self.swa_lr is None or swa is not None, "train.swa_lr", self.swa_lr,
              "null unless train.swa_start_epoch is set")
        _need(swa is None or self.ema_decay == 0, "train.ema_decay", self.ema_decay,
              "0 when train.swa_start_epoch is set (evaluate either the EMA or the SWA weights)")
        _need(swa is None or self.test_weights == "last", "train.test_weights", self.test_weights,
              "'last' when train.swa_start_epoch is set (the SWA average is what is tested)")
        _need(1 <= self.tta_shift <= 4, "train.tta_shift", self.tta_shift, "1..4 pixels")
        conf = self.tta_confidence
        _need(conf is None or 0 < conf <= 1, "train.tta_confidence", conf, "null or a confidence in (0, 1]")
        _need(conf is None or self.tta != "none", "train.tta_confidence", conf, "null when train.tta is 'none'")
        _need(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), "train.device",
              self.device, "auto, cpu, cuda, cuda:N or mps")


@dataclass
class RunConfig:
    name: str = ""  # run name; empty: derived from the preset/model and a timestamp
    description: str = ""  # free text kept with the run (presets say what they reproduce)
    preset: str = ""  # the shipped preset the config started from (set by load_config; names runs quick-<stamp>)
    out_dir: str = "runs"  # parent directory of run directories
    tensorboard: bool = False  # also log to TensorBoard (needs the `tensorboard` extra)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------------------------
# Checks


def _need(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': got {value!r}, expected {expected}")


def _yaml(value: Any) -> str:
    """A value as it is written in an override: true, null, 0.9, [0.9, 0.999]."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _or(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def optimizer_key_owners() -> dict[str, list[str]]:
    """``optim.*`` key -> the optimizers it is specific to, in registry order (nesterov: sgd, scratch_sgd)."""
    owners: dict[str, list[str]] = {}
    for name, keys in OPTIMIZER_KEYS.items():
        for key in keys:
            owners.setdefault(key, []).append(name)
    return owners


def validate(cfg: RunConfig) -> RunConfig:
    """Every section's own ``check()``, then the checks on values that span sections."""
    for section in (cfg.data, cfg.augment, cfg.loss, cfg.optim, cfg.sched, cfg.train):
        section.check()
    d, t, o, s = cfg.data, cfg.train, cfg.optim, cfg.sched
    patience = t.early_stopping.patience
    _need(d.val_size > 0 or patience == 0, "train.early_stopping.patience", patience,
          "0 when data.val_size is 0 (early stopping needs a validation split)")
    _need(d.val_size > 0 or t.test_weights == "last", "train.test_weights", t.test_weights,
          "'last' when data.val_size is 0 (choosing the best epoch needs a validation split)")
    _need(s.warmup_epochs < t.epochs or s.warmup_epochs == 0, "sched.warmup_epochs", s.warmup_epochs,
          f"fewer than train.epochs ({t.epochs})")
    _need(0 <= s.min_lr < o.lr, "sched.min_lr", s.min_lr, f"0 <= min_lr < optim.lr ({o.lr})")
    _need(s.name != "plateau" or d.val_size > 0, "sched.name", s.name,
          "not plateau when data.val_size is 0 (it watches the validation loss)")
    _need(t.val_every == 1 or (s.name != "plateau" and patience == 0), "train.val_every", t.val_every,
          "1 when sched.name is plateau or early stopping is on (they read every epoch's validation)")
    _need(cfg.name == "" or _is_folder_name(cfg.name), "name", cfg.name,
          "one folder name (no '/', not '.' or '..', at most 200 characters)")
    return cfg


def _is_folder_name(name: str) -> bool:
    return len(name) <= 200 and name not in (".", "..") and not any(c in name for c in "/\\\0")


# --------------------------------------------------------------------------------------------------------------
# Loading: dicts -> validated dataclasses


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it converted (int->float, list->tuple)."""
    origin = get_origin(tp)
    bad = ConfigError(f"config key '{key}': got {value!r} ({type(value).__name__}), expected {_type_name(tp)}")
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise bad
        return value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return build_section(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        return _coerce_float(value, key, bad)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        items = [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    raise bad  # pragma: no cover - schema uses only the types above


def _coerce_float(value: Any, key: str, bad: ConfigError) -> float:
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string; users mean a number
        try:
            value = float(value)
        except ValueError:
            raise bad from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if not math.isfinite(value):  # inf/nan are never a setting: they only make a run diverge later
        raise ConfigError(f"config key '{key}': got {value!r}, expected a finite number")
    return float(value)


def build_section(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """The dataclass ``cls`` from a plain dict, nested sections included; ``prefix`` ("optim") names the keys in
    errors. Unknown keys and wrong types raise one ``ConfigError``; values are checked by the caller."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{full}'; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), suitable for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge; ``update`` wins. ``model.options`` is merged key by key like any mapping."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"optim.lr=0.01"`` -> ``{"optim": {"lr": 0.01}}``; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.subkey=value (e.g. optim.lr=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]  # a ReaderError (e.g. NUL) has none
        raise ConfigError(f"override {text!r}: value is not valid YAML ({reason})") from None
    nested: dict[str, Any] = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


class YamlLoader(yaml.SafeLoader):
    """YAML with the 1.2 core schema's booleans: only true/false. YAML 1.1 also reads on/off/yes/no as booleans,
    which turned ``train.amp=off`` into False."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, got {type(data).__name__}")
    return data


def list_presets() -> list[str]:
    folder = resources.files("cifarlab") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_name(name: str) -> str:
    """The one spelling of a preset name, as `cifarlab presets` lists it: fast-cpu and fast_cpu are one preset."""
    return name.replace("-", "_")


def preset_dict(name: str) -> dict[str, Any]:
    folder = resources.files("cifarlab") / "presets"
    path = folder / f"{preset_name(name)}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not path.is_file():
        raise ConfigError(f"unknown preset '{name}'; available presets: {', '.join(list_presets())} (a preset is a "
                          "shipped name; pass your own YAML file with -c FILE)")
    return load_yaml(path.read_text()) or {}


def merge_layer(base: dict[str, Any], *patches: dict[str, Any], log: Callable[[str], None] | None = None
                ) -> dict[str, Any]:
    """``deep_merge`` of one layer (its patches in order) onto ``base``, where optimizer settings follow the
    optimizer: if the layer sets ``optim.name`` to another optimizer than ``base``'s, the settings of ``base``
    specific to other optimizers (``optim.nesterov`` of an SGD preset, when switching to adam) are dropped first,
    so they return to their defaults, and ``log`` gets one line naming them; the layer's own settings are kept
    and checked."""
    names = [p["optim"]["name"] for p in patches if isinstance(p.get("optim"), dict) and "name" in p["optim"]]
    optim = base.get("optim")
    old = optim.get("name", OptimConfig.name) if isinstance(optim, dict) else None
    if names and isinstance(optim, dict) and names[-1] != old:
        owners = optimizer_key_owners()
        kept = {k: v for k, v in optim.items() if k not in owners or names[-1] in owners[k]}
        dropped = [f"optim.{k}={_yaml(v)}" for k, v in optim.items() if k not in kept]
        if dropped and log is not None:
            log(f"optim.name={names[-1]} (was {old}): dropped {', '.join(dropped)}, which {names[-1]} does not take")
        base = {**base, "optim": kept}
    for patch in patches:
        base = deep_merge(base, patch)
    return base


def load_config(
    preset: str | None = None,
    files: list[str | Path] | None = None,
    overrides: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> RunConfig:
    """Build a validated ``RunConfig`` from defaults < preset < YAML files < dotted overrides.

    Layers: the preset, each file, and all overrides together; see ``merge_layer`` for optimizer settings
    (``log`` hears which settings a switch of optimizer dropped)."""
    merged: dict[str, Any] = preset_dict(preset) if preset else {}
    for path in files or []:
        merged = merge_layer(merged, read_yaml(path), log=log)
    merged = merge_layer(merged, *(parse_override(text) for text in overrides or []), log=log)
    cfg = validate(build_section(RunConfig, merged))
    if preset and not cfg.preset:
        cfg.preset = preset_name(preset)
    return cfg


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Rebuild a config saved by ``to_dict`` (e.g. from a run directory)."""
    return validate(build_section(RunConfig, values))
