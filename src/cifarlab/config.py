"""The one config schema of cifarlab, and how it is loaded.

A run is described by a ``RunConfig`` (nested dataclasses with plain values). It is built in layers:

    defaults  <  --preset NAME (shipped YAML)  <  -c FILE.yaml  <  dotted overrides (``optim.lr=0.01``)

Every layer is validated against the dataclasses below: unknown keys, wrong types and impossible values give
one ``ConfigError`` that names the key, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
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


@dataclass
class AugmentConfig:
    crop_padding: int = 4  # random crop after padding by this many pixels; 0 disables
    pad_mode: Literal["reflect", "zeros"] = "reflect"
    flip: bool = True  # random horizontal flip
    cutout: int = 0  # side of a random square set to zero (after normalisation: the mean); 0 disables


@dataclass
class ModelConfig:
    name: str = "quick_cnn"  # see `cifarlab models`
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of the model (width_mult, activation...)


@dataclass
class LossConfig:
    name: Literal["cross_entropy"] = "cross_entropy"
    label_smoothing: float = 0.0


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw
    eps: float = 1e-8  # adam/adamw
    weight_decay: float = 5e-4  # torch semantics: added to the gradient (sgd, adam), decoupled (adamw)
    grad_clip: float = 0.0  # clip the global gradient norm to this value; 0 disables


@dataclass
class SchedulerConfig:
    name: Literal["constant", "step", "cosine", "onecycle"] = "cosine"
    interval: Literal["auto", "step", "epoch"] = "auto"  # auto: per step for smooth schedules, per epoch for step
    warmup_epochs: float = 0.0  # linear warm-up from ~0 to optim.lr (cosine and constant)
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    min_lr: float = 0.0  # cosine: floor
    pct_start: float = 0.25  # onecycle: fraction of training spent increasing the LR


@dataclass
class EarlyStoppingConfig:
    patience: int = 0  # epochs without improvement of `monitor` before stopping; 0 disables
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    min_delta: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"  # auto (cuda if present, else cpu), cpu, cuda, cuda:N, mps
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, off on CPU (bf16 is slower there)
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (pays off on GPUs for long runs)
    deterministic: bool = True  # deterministic kernels (CPU runs are bit-reproducible)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    test_weights: Literal["last", "best"] = "last"  # weights evaluated on the test set at the end
    log_every: int = 20  # steps between progress-bar refreshes (each one syncs the device)


@dataclass
class RunConfig:
    name: str = ""  # run name; empty: derived from the preset/model and a timestamp
    description: str = ""  # free text kept with the run (presets say what they reproduce)
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
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string; users mean a number
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
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


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
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
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc.problem})") from None
    nested: dict[str, Any] = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
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


def preset_dict(name: str) -> dict[str, Any]:
    folder = resources.files("cifarlab") / "presets"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset '{name}'; available presets: {', '.join(list_presets())}")
    return yaml.safe_load(path.read_text()) or {}


def validate(cfg: RunConfig) -> RunConfig:
    """Checks on values that the types alone cannot express."""

    def need(ok: bool, key: str, value: Any, expected: str) -> None:
        if not ok:
            raise ConfigError(f"config key '{key}': got {value!r}, expected {expected}")

    d, a, t, o, s = cfg.data, cfg.augment, cfg.train, cfg.optim, cfg.sched
    need(0 <= d.val_size < 50000, "data.val_size", d.val_size, "0 <= val_size < 50000")
    need(d.subset is None or d.subset >= 10, "data.subset", d.subset, "null or an integer >= 10")
    need(d.subset is None or d.subset <= 50000 - d.val_size, "data.subset", d.subset,
         f"at most 50000 - data.val_size = {50000 - d.val_size}")
    need(d.test_subset is None or 10 <= d.test_subset <= 10000, "data.test_subset", d.test_subset,
         "null or 10..10000")
    need(0 <= a.crop_padding <= 16, "augment.crop_padding", a.crop_padding, "0..16")
    need(0 <= a.cutout <= 32, "augment.cutout", a.cutout, "0..32")
    need(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
    need(t.batch_size >= 1, "train.batch_size", t.batch_size, "an integer >= 1")
    need(t.eval_batch_size >= 1, "train.eval_batch_size", t.eval_batch_size, "an integer >= 1")
    need(t.log_every >= 1, "train.log_every", t.log_every, "an integer >= 1")
    need(t.early_stopping.patience >= 0, "train.early_stopping.patience", t.early_stopping.patience, ">= 0")
    need(d.val_size > 0 or t.early_stopping.patience == 0, "train.early_stopping.patience",
         t.early_stopping.patience, "0 when data.val_size is 0 (early stopping needs a validation split)")
    need(d.val_size > 0 or t.test_weights == "last", "train.test_weights", t.test_weights,
         "'last' when data.val_size is 0 (choosing the best epoch needs a validation split)")
    need(o.lr > 0, "optim.lr", o.lr, "a learning rate > 0")
    need(0 <= o.momentum < 1, "optim.momentum", o.momentum, "0 <= momentum < 1")
    need(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, ">= 0")
    need(o.grad_clip >= 0, "optim.grad_clip", o.grad_clip, ">= 0 (0 disables)")
    need(all(0 <= b < 1 for b in o.betas), "optim.betas", list(o.betas), "two numbers in [0, 1)")
    need(not (o.nesterov and (o.name != "sgd" or o.momentum == 0)), "optim.nesterov", o.nesterov,
         "false unless optim.name is sgd with momentum > 0")
    need(0 <= cfg.loss.label_smoothing < 1, "loss.label_smoothing", cfg.loss.label_smoothing, "0 <= x < 1")
    need(s.warmup_epochs >= 0, "sched.warmup_epochs", s.warmup_epochs, ">= 0")
    need(s.warmup_epochs < t.epochs or s.warmup_epochs == 0, "sched.warmup_epochs", s.warmup_epochs,
         f"fewer than train.epochs ({t.epochs})")
    need(s.step_size >= 1, "sched.step_size", s.step_size, ">= 1")
    need(0 < s.gamma <= 1, "sched.gamma", s.gamma, "0 < gamma <= 1")
    need(0 <= s.min_lr < o.lr, "sched.min_lr", s.min_lr, f"0 <= min_lr < optim.lr ({o.lr})")
    need(0 < s.pct_start < 1, "sched.pct_start", s.pct_start, "0 < pct_start < 1")
    need(t.device == "auto" or t.device.split(":")[0] in ("cpu", "cuda", "mps"), "train.device", t.device,
         "auto, cpu, cuda, cuda:N or mps")
    return cfg


def load_config(
    preset: str | None = None,
    files: list[str | Path] | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Build a validated ``RunConfig`` from defaults < preset < YAML files < dotted overrides."""
    merged: dict[str, Any] = {}
    if preset:
        merged = deep_merge(merged, preset_dict(preset))
    for path in files or []:
        merged = deep_merge(merged, read_yaml(path))
    for text in overrides or []:
        merged = deep_merge(merged, parse_override(text))
    return validate(_build(RunConfig, merged))


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Rebuild a config saved by ``to_dict`` (e.g. from a run directory)."""
    return validate(_build(RunConfig, values))
