"""Tune files: a search space over dotted config keys, a base config, a budget and an objective (docs/tune.md).

::

    name: cnn3
    base: {preset: quick_cnn}                        # as in sweep files: preset + config keys / overrides
    scale: quick                                   # which block of `scales:` is merged on top of base
    scales: {quick: {data.subset: 10000, n_trials: 12}, full: {n_trials: 40}}
    space:
      optim.lr: {type: float, low: 0.01, high: 0.5, log: true}
      model.options.dropout: {type: float, low: 0.0, high: 0.4}
      loss.label_smoothing: {type: categorical, choices: [0.0, 0.1, 0.2]}
      sched.warmup_epochs: {type: int, low: 0, high: 2}
    objective: val_acc                             # or val_loss; read at the final epoch of each trial
    n_trials: 20                                   # and/or timeout: seconds of search
    sampler: tpe                                   # tpe | random | grid (grid: categorical parameters only)
    pruner: median                                 # median | hyperband | halving | none
    seed: 0                                        # the sampler's seed
    seeds: [0]                                     # train.seed of each trial's run(s); the objective is their mean

The file is read by the project's one builder (``config.build_section``) and checked here: every mistake is one
``ConfigError`` line naming the file, the key and the value. A scale block holds config keys plus, optionally,
``n_trials`` and ``timeout``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cifarlab.config import build_section, config_from_dict, deep_merge, read_yaml
from cifarlab.errors import ConfigError
from cifarlab.experiments.sweep import _resolve_base, dotted_to_nested

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "halving", "none")
OBJECTIVES = {"val_acc": "maximize", "val_loss": "minimize"}
PARAM_TYPES = ("float", "int", "categorical")
SCALE_TUNE_KEYS = ("n_trials", "timeout")


@dataclass
class ParamSpec:
    """One searched key: ``float``/``int`` in [low, high] (``log`` for a log scale, ``step`` for a grid of
    them), or ``categorical`` over ``choices``."""

    type: str = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)

    def check(self, where: str) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"{where}: {what}")

        need(self.type in PARAM_TYPES, f"'type' must be one of {', '.join(PARAM_TYPES)}, got {self.type!r}")
        if self.type == "categorical":
            need(bool(self.choices), "'choices' must be a non-empty list")
            need(self.low is None and self.high is None, "a categorical parameter takes 'choices', not low/high")
            return
        need(not self.choices, f"'choices' is for categorical parameters, not {self.type}")
        need(self.low is not None and self.high is not None, "'low' and 'high' are required")
        assert self.low is not None and self.high is not None
        need(self.low < self.high, f"'low' ({self.low}) must be below 'high' ({self.high})")
        need(not self.log or self.low > 0, f"'log: true' needs low > 0, got {self.low}")
        need(not (self.log and self.step), "'log' and 'step' exclude each other")
        if self.type == "int":
            need(float(self.low).is_integer() and float(self.high).is_integer(),
                 f"int bounds must be integers, got {self.low}, {self.high}")


@dataclass
class TuneFile:
    """The keys of a tune file, typed by the builder; ``check`` the rest."""

    name: str = ""
    description: str = ""
    base: str | dict[str, Any] | None = None
    scale: str | None = None
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    objective: str = "val_acc"
    n_trials: int | None = 20
    timeout: float | None = None  # seconds of search; None: no time limit
    sampler: str = "tpe"
    pruner: str = "median"
    prune_startup_trials: int = 3  # finished trials before the pruner prunes anything
    prune_warmup_epochs: int = 1  # epochs of a trial before it may be pruned (median pruner)
    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    storage: str | None = None  # an SQLAlchemy URL; None: sqlite file study.db in the tune folder

    def check(self, source: str) -> None:
        def need(ok: bool, key: str, value: Any, expected: str) -> None:
            if not ok:
                raise ConfigError(f"{source}: key '{key}': got {value!r}, expected {expected}")

        need(bool(self.name.strip()) and "/" not in self.name, "name", self.name, "a non-empty folder name")
        need(bool(self.space), "space", self.space, "a mapping of dotted config keys to parameter specs")
        need(self.objective in OBJECTIVES, "objective", self.objective, " or ".join(OBJECTIVES))
        need(self.sampler in SAMPLERS, "sampler", self.sampler, " | ".join(SAMPLERS))
        need(self.pruner in PRUNERS, "pruner", self.pruner, " | ".join(PRUNERS))
        need(self.n_trials is None or self.n_trials >= 1, "n_trials", self.n_trials, "an integer >= 1 or null")
        need(self.timeout is None or self.timeout > 0, "timeout", self.timeout, "seconds > 0 or null")
        need(self.n_trials is not None or self.timeout is not None, "n_trials", None,
             "a budget: n_trials and/or timeout")
        need(self.prune_startup_trials >= 0, "prune_startup_trials", self.prune_startup_trials, "an integer >= 0")
        need(self.prune_warmup_epochs >= 0, "prune_warmup_epochs", self.prune_warmup_epochs, "an integer >= 0")
        need(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds", self.seeds,
             "a non-empty list of distinct integers")


@dataclass
class TuneSpec:
    name: str
    base: dict[str, Any]  # nested config dict, scale merged in
    space: dict[str, ParamSpec]
    objective: str = "val_acc"
    n_trials: int | None = 20
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    prune_startup_trials: int = 3
    prune_warmup_epochs: int = 1
    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    storage: str | None = None
    scale: str | None = None
    description: str = ""

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    def show(self, value: float) -> str:
        """An objective value as every table of cifarlab shows it: accuracies in %, losses to 4 decimals."""
        return f"{100 * value:.2f} %" if self.objective.endswith("acc") else f"{value:.4f}"


def _parse_space(raw: dict[str, dict[str, Any]], source: str, sampler: str) -> dict[str, ParamSpec]:
    space: dict[str, ParamSpec] = {}
    for key, body in raw.items():
        where = f"{source}: space '{key}'"
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: expected a mapping like {{type: float, low: 0.01, high: 0.5, log: true}}, "
                              f"got {body!r}")
        try:
            spec = build_section(ParamSpec, body)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {str(exc).replace('config key', 'key')}") from None
        spec.check(where)
        if sampler == "grid" and spec.type != "categorical":
            raise ConfigError(f"{where}: sampler 'grid' searches categorical parameters only; give 'choices'")
        space[key] = spec
    return space


def _probe_values(space: dict[str, ParamSpec]) -> dict[str, Any]:
    """One point of the space (lows / first choices), to check the keys against the config schema up front."""
    return {k: (p.choices[0] if p.type == "categorical" else int(p.low) if p.type == "int" else p.low)
            for k, p in space.items()}


def parse_tune_spec(raw: Any, scale: str | None = None, source: str = "tune file") -> TuneSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a tune file must hold a mapping")
    try:
        f = build_section(TuneFile, {k: v for k, v in raw.items() if v is not None or k in ("base", "scale")})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {str(exc).replace('config key', 'tune key')}") from None
    chosen = scale if scale is not None else f.scale
    base = _resolve_base(f.base)
    if chosen is not None:
        if chosen not in f.scales:
            raise ConfigError(f"{source}: unknown scale '{chosen}'; defined scales: {', '.join(f.scales) or 'none'}")
        block = dict(f.scales[chosen])
        for key in SCALE_TUNE_KEYS:
            if key in block:
                setattr(f, key, block.pop(key))
        base = deep_merge(base, dotted_to_nested(block))
    f.check(source)
    space = _parse_space(f.space, source, f.sampler)
    if f.sampler == "grid":  # a grid is searched at most once: its size caps the budget
        size = math.prod(len(p.choices) for p in space.values())
        f.n_trials = size if f.n_trials is None else min(f.n_trials, size)
    try:
        config_from_dict(deep_merge(base, dotted_to_nested(_probe_values(space))))
    except ConfigError as exc:
        raise ConfigError(f"{source}: the base config with the search space does not validate: {exc}") from None
    return TuneSpec(name=f.name.strip(), base=base, space=space, objective=f.objective, n_trials=f.n_trials,
                    timeout=f.timeout, sampler=f.sampler, pruner=f.pruner,
                    prune_startup_trials=f.prune_startup_trials, prune_warmup_epochs=f.prune_warmup_epochs,
                    seed=f.seed, seeds=list(f.seeds),
                    storage=f.storage, scale=chosen, description=f.description)


def list_tune_presets() -> list[str]:
    folder = resources.files("cifarlab") / "presets" / "tune"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_tune_spec(path_or_name: str | Path, scale: str | None = None) -> TuneSpec:
    """A tune file, or the name of a shipped tune preset (``cnn3``)."""
    path = Path(path_or_name)
    if not path.is_file() and not path.suffix and "/" not in str(path_or_name):
        path = Path(str(resources.files("cifarlab") / "presets" / "tune" / f"{path_or_name}.yaml"))
        if not path.is_file():
            raise ConfigError(f"tune file '{path_or_name}' does not exist and is not a tune preset; "
                              f"presets: {', '.join(list_tune_presets()) or 'none'}")
    return parse_tune_spec(read_yaml(path), scale=scale, source=f"tune file '{path}'")
