"""Sweeps: a YAML spec -> a grid of run configs -> run directories under one sweep directory.

A spec (see docs/experiments.md)::

    name: activations
    base: {preset: quick_cnn, train: {epochs: 5}}    # preset + any RunConfig keys (or `overrides:` with dotted keys)
    scale: quick                                   # which block of `scales:` is merged on top of base
    scales: {quick: {...}, full: {...}}
    axes: {model.options.activation: [relu, elu]}  # cartesian product of dotted keys
    variants: [{label: vgg_a, model.name: vgg_a}]  # named patches (crossed with the axes when both are given)
    seeds: [0, 1, 2]                               # train.seed; each (variant, seed) is one run

Every expanded config is validated before anything runs, so a typo fails the sweep up front, not after hours.
Runs are resumable: finished ones are skipped, interrupted ones resumed from checkpoints/last.pt.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from cifarlab.config import (
    RunConfig,
    build_section,
    config_from_dict,
    deep_merge,
    preset_dict,
    preset_name,
    read_yaml,
    to_dict,
)
from cifarlab.engine.rundir import RunLock, comparable, remove_stale_temporaries
from cifarlab.errors import CifarlabError, ConfigError
from cifarlab.io import atomic_write_json, atomic_write_yaml, write_csv
from cifarlab.manifest import read_manifest, write_manifest

SPEC_KEYS = ("name", "description", "base", "scale", "scales", "axes", "variants", "seeds", "reference",
             "report_table")
REPORT_TABLE_KEYS = ("report", "table", "metric", "rows", "order", "reading")
DONE = ("completed", "early_stopped")  # a run in one of these states is never re-run
STATUS_FIELDS = ("variant", "seed", "run_dir", "status", "error")


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]  # nested config dict (preset already merged in)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    scale: str | None = None
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What the chosen scale adds besides config keys: patches by variant label (e.g. a width per model family,
    # since families name their width options differently) and its own seeds.
    per_variant: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    reference: str = ""  # free text: what the sweep reproduces (shown in reports)
    # The report table the sweep reproduces: report, table, metric, rows {label: their %} and/or order (best-first
    # groups of labels), reading (how an ambiguous protocol was read). Printed beside ours in results.md.
    report_table: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunPlan:
    label: str  # variant label, e.g. "activation=elu,optim=adam"
    seed: int
    rel_dir: str  # run directory relative to the sweep directory, e.g. "activation=elu,optim=adam/seed0"
    config: dict[str, Any]  # resolved, validated config dict (to_dict of a RunConfig)

    @property
    def cfg(self) -> RunConfig:
        return config_from_dict(self.config)


# --------------------------------------------------------------------------------------------------------------
# Spec parsing


def list_experiment_presets() -> list[str]:
    folder = resources.files("cifarlab") / "presets" / "experiments"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def reproduces(report_table: dict[str, Any]) -> str:
    """'3-block CNN report: schedulers (50 epochs)', or '-' for a sweep that reproduces no report table."""
    return f"{report_table['report']}: {report_table['table']}" if report_table else "-"


def experiment_preset_rows() -> list[tuple[str, str, str]]:
    """(name, report table it reproduces, description) of every shipped experiment preset."""
    rows = []
    for name in list_experiment_presets():
        raw = read_yaml(experiment_preset_path(name))
        rows.append((name, reproduces(raw.get("report_table") or {}), str(raw.get("description", ""))))
    return rows


def experiment_preset_path(name: str) -> Path:
    path = Path(str(resources.files("cifarlab") / "presets" / "experiments" / f"{name}.yaml"))
    if not path.is_file():
        raise ConfigError(f"sweep file '{name}' does not exist and is not an experiment preset; "
                          f"presets: {', '.join(list_experiment_presets())}")
    return path


def dotted_to_nested(patch: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.1, "train": {"epochs": 2}}`` -> nested dict; dotted and nested keys may be mixed."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"sweep: bad config key {key!r}")
        if isinstance(value, dict):
            value = dotted_to_nested(value)
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        out = deep_merge(out, nested)
    return out


def _resolve_base(base: Any) -> dict[str, Any]:
    """``base`` = optional ``preset`` + ``overrides`` (dotted mapping or list of key=value) + any config keys."""
    if base is None:
        return {}
    if not isinstance(base, dict):
        raise ConfigError(f"sweep key 'base': expected a mapping of config keys, got {type(base).__name__}")
    base = dict(base)
    merged: dict[str, Any] = {}
    preset = base.pop("preset", None)
    if preset:  # recorded in each run's config, as `cifarlab train --preset` records it (one spelling)
        merged = {**preset_dict(str(preset)), "preset": preset_name(str(preset))}
    overrides = base.pop("overrides", None)
    merged = deep_merge(merged, dotted_to_nested(base))
    if isinstance(overrides, list):
        from cifarlab.config import parse_override

        for text in overrides:
            merged = deep_merge(merged, parse_override(str(text)))
    elif isinstance(overrides, dict):
        merged = deep_merge(merged, dotted_to_nested(overrides))
    elif overrides is not None:
        raise ConfigError("sweep key 'base.overrides': expected a mapping of dotted keys or a list of key=value")
    return merged


@dataclass
class SweepFile:
    """The keys of a sweep file, typed: the config's builder checks types and unknown keys; ``check`` the rest."""

    name: str = ""
    description: str = ""
    base: str | dict[str, Any] | None = None  # a preset name or a nested config dict
    scale: str | None = None
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] | int = field(default_factory=lambda: [0])
    reference: str = ""
    report_table: dict[str, Any] = field(default_factory=dict)

    def check(self, source: str) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"{source}: {message}")

        need(bool(self.name.strip()) and "/" not in self.name,
             f"'name' must be a non-empty folder name, got {self.name!r}")
        need(all(isinstance(v, list) and v for v in self.axes.values()),
             "'axes' must map dotted config keys to non-empty lists of values")
        need(all(isinstance(v, dict) for v in self.scales.values()),
             "'scales' must map scale names to mappings of config keys")
        if isinstance(self.seeds, int):
            self.seeds = [self.seeds]
        _check_seeds(self.seeds, "'seeds'", source)
        if self.report_table:
            _check_report_table(self.report_table, source)

    def resolve_scale(self, scale: str | None, source: str) -> tuple[str | None, dict[str, Any]]:
        """The chosen scale (``scale`` or the file's own) with its seeds and per-variant patches taken out."""
        chosen = scale if scale is not None else self.scale
        if chosen is None:
            return None, {}
        if chosen not in self.scales:
            raise ConfigError(f"{source}: unknown scale '{chosen}'; defined scales: {', '.join(self.scales) or 'none'}")
        block = dict(self.scales[chosen])
        if "seeds" in block:
            self.seeds = block.pop("seeds")
            _check_seeds(self.seeds, f"scales.{chosen}.seeds", source)
        per_variant = block.pop("per_variant", None) or {}
        labels = {str(v.get("label")) for v in self.variants}
        if not isinstance(per_variant, dict) or any(k not in labels or not isinstance(v, dict)
                                                    for k, v in per_variant.items()):
            raise ConfigError(f"{source}: scales.{chosen}.per_variant must map variant labels "
                              f"({', '.join(sorted(labels)) or 'none defined'}) to mappings of config keys")
        self.scales = {**self.scales, chosen: block}
        return chosen, per_variant


def _check_seeds(seeds: Any, what: str, source: str) -> None:
    if not isinstance(seeds, list) or not seeds or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds):
        raise ConfigError(f"{source}: {what} must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: {what} has duplicates: {seeds}")


def _check_report_table(t: dict[str, Any], source: str) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: report_table.{message}")

    unknown = sorted(set(t) - set(REPORT_TABLE_KEYS))
    need(not unknown, f"{unknown[0] if unknown else ''}: unknown key; valid: {', '.join(REPORT_TABLE_KEYS)}")
    need(isinstance(t.get("report"), str) and isinstance(t.get("table"), str), "report/table: both are needed (text)")
    need(t.get("metric", "test_acc") in ("test_acc", "val_acc"), f"metric: {t.get('metric')!r}, expected test_acc "
         "or val_acc")
    rows = t.get("rows", {})
    need(isinstance(rows, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                        for v in rows.values()), "rows: expected {variant label: their %}")
    order = t.get("order", [])
    need(isinstance(order, list) and all(isinstance(g, (str, list)) for g in order),
         "order: expected a best-first list of variant labels (a list for a tie)")
    need(bool(rows) or bool(order), "rows or order: give the report's numbers or its ranking")


def report_labels(t: dict[str, Any]) -> list[str]:
    """Every variant label a report table names (its rows, then its order)."""
    labels = list(t.get("rows", {}))
    for group in t.get("order", []):
        labels += [g for g in ([group] if isinstance(group, str) else group) if g not in labels]
    return labels


def parse_spec(raw: dict[str, Any], scale: str | None = None, source: str = "sweep") -> SweepSpec:
    """Check the spec's own keys (config keys are checked later, per expanded run) and resolve the base."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a sweep file must hold a mapping")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown sweep key '{unknown[0]}'; valid keys: {', '.join(SPEC_KEYS)}")
    try:
        f = build_section(SweepFile, {k: v for k, v in raw.items() if v is not None or k in ("base", "scale")})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {str(exc).replace('config key', 'sweep key')}") from None
    f.check(source)
    chosen, per_variant = f.resolve_scale(scale, source)
    return SweepSpec(name=f.name.strip(), base=_resolve_base(f.base), axes=f.axes, variants=f.variants,
                     seeds=list(f.seeds), scale=chosen, scales=f.scales, per_variant=per_variant,
                     description=f.description, reference=f.reference, report_table=f.report_table)


def load_spec(path_or_name: str | Path, scale: str | None = None) -> SweepSpec:
    """A sweep file, or the name of a shipped experiment preset (``activations``)."""
    path = Path(path_or_name)
    if not path.is_file() and not path.suffix and "/" not in str(path_or_name):
        path = experiment_preset_path(str(path_or_name))
    return parse_spec(read_yaml(path), scale=scale, source=f"sweep file '{path}'")


# --------------------------------------------------------------------------------------------------------------
# Expansion


def _short_key(key: str, keys: Sequence[str]) -> str:
    """Label part of an axis key: its last component, unless two axes share it (then the full dotted key)."""
    last = key.split(".")[-1]
    return last if sum(k.split(".")[-1] == last for k in keys) == 1 else key


def _fmt_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_fmt_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def safe_dir_name(label: str) -> str:
    """Label -> one folder name: keep it readable, drop what file systems or shells dislike."""
    name = re.sub(r"[^A-Za-z0-9=,._+-]+", "_", label).strip("._")
    return name or "variant"


def expand(spec: SweepSpec) -> list[RunPlan]:
    """Every (variant, seed) run with its validated config; a bad config raises one error naming the variant."""
    base = spec.base
    if spec.scale:
        base = deep_merge(base, dotted_to_nested(spec.scales[spec.scale]))
    keys = list(spec.axes)
    grid = [dict(zip(keys, combo)) for combo in itertools.product(*(spec.axes[k] for k in keys))] if keys else [{}]
    variants = spec.variants or [{}]
    plans: list[RunPlan] = []
    seen: dict[str, str] = {}
    for variant in variants:
        variant = dict(variant)
        v_label = str(variant.pop("label", "")) if "label" in variant else ""
        scale_patch = spec.per_variant.get(v_label, {}) if v_label else {}
        if not v_label and variant:
            v_label = ",".join(f"{_short_key(k, list(variant))}={_fmt_value(v)}" for k, v in variant.items())
        for point in grid:
            a_label = ",".join(f"{_short_key(k, keys)}={_fmt_value(v)}" for k, v in point.items())
            label = ",".join(p for p in (v_label, a_label) if p) or "base"
            merged = deep_merge(deep_merge(base, dotted_to_nested(variant)), dotted_to_nested(scale_patch))
            merged = deep_merge(merged, dotted_to_nested(point))
            dir_name = safe_dir_name(label)
            if dir_name in seen and seen[dir_name] != label:
                raise ConfigError(f"sweep: variants '{seen[dir_name]}' and '{label}' map to the same folder")
            if label in seen:
                raise ConfigError(f"sweep: variant label '{label}' appears twice; give variants distinct labels")
            seen[dir_name] = label
            for seed in spec.seeds:
                values = deep_merge(merged, {"train": {"seed": seed}, "name": f"{dir_name}-seed{seed}"})
                try:
                    cfg = config_from_dict(values)
                    _check_model(cfg)
                except CifarlabError as exc:
                    raise ConfigError(f"sweep variant '{label}' (seed {seed}): {exc}") from None
                plans.append(RunPlan(label=label, seed=seed, rel_dir=f"{dir_name}/seed{seed}", config=to_dict(cfg)))
    missing = [lb for lb in report_labels(spec.report_table) if lb not in seen.values()]
    if missing:
        raise ConfigError(f"sweep {spec.name}: report_table names variant '{missing[0]}', which the sweep does not "
                          f"have; variants: {', '.join(dict.fromkeys(seen.values()))}")
    return plans


def _check_model(cfg: RunConfig) -> None:
    """Model name and option names up front (cheap: no model is built); option values are checked at run time."""
    from cifarlab.models.registry import get_entry

    valid = get_entry(cfg.model.name).options()
    unknown = sorted(set(cfg.model.options) - set(valid))
    if unknown:
        raise ConfigError(f"model '{cfg.model.name}' has no option '{unknown[0]}'; options: {', '.join(valid)}")


def sweep_dir_for(spec: SweepSpec, out: str | Path = "runs/sweeps") -> Path:
    # Scales get their own folder: quick results must never be "skipped as done" when the full scale runs.
    return Path(out) / (f"{spec.name}-{spec.scale}" if spec.scale else spec.name)


# --------------------------------------------------------------------------------------------------------------
# Run states and status files


def run_state(run_dir: Path, config: dict[str, Any] | None = None) -> str:
    """``done``/``diverged`` (summary.json), ``resume`` (last.pt, no summary) or ``new``.

    With ``config``, a run directory written with a different config raises: silently skipping or resuming
    a run of another experiment would put wrong numbers in the table.
    """
    if config is not None and (run_dir / "config.yaml").is_file():
        old = read_yaml(run_dir / "config.yaml")
        if comparable(old) != comparable(config):
            raise ConfigError(f"'{run_dir}' holds a run with a different config; the sweep spec changed since it "
                              "ran: use another --out or sweep name, or delete that folder")
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            status = json.loads(summary.read_text()).get("status")
        except (json.JSONDecodeError, OSError):
            status = None
        if status in DONE:
            return "done"
        if status == "diverged":
            return "diverged"  # deterministic: re-running would diverge again
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "resume"
    return "new"


def read_status(sweep_dir: Path) -> list[dict[str, Any]]:
    path = Path(sweep_dir) / "sweep_status.json"
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("runs", []))


def write_status(sweep_dir: Path, spec_name: str, rows: list[dict[str, Any]], state: str) -> None:
    """sweep_status.json + runs.csv, both atomic (a crash never leaves a half-written index)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(sweep_dir / "sweep_status.json", {"name": spec_name, "state": state, "updated": now,
                                                         "runs": rows})
    write_csv(sweep_dir / "runs.csv", rows, STATUS_FIELDS)
    write_sweep_manifest(sweep_dir, [r["run_dir"] for r in rows])


def write_sweep_manifest(sweep_dir: Path, run_dirs: list[str], figures: list[dict[str, Any]] | None = None) -> None:
    """The sweep's section of ``cifarlab report`` (its runs get none of their own). ``figures``: manifest items;
    None keeps those of the current manifest (figures are drawn once, at the end of a sweep)."""
    from cifarlab.experiments.compare import sweep_items

    if figures is None:
        figures = [i for i in getattr(read_manifest(sweep_dir), "items", []) if i["kind"] == "figure"]
    write_manifest(sweep_dir, "Sweep {path}", sweep_items(sweep_dir) + figures, covers=run_dirs)


def spec_dict(spec: SweepSpec) -> dict[str, Any]:
    return {"name": spec.name, "description": spec.description, "reference": spec.reference,
            "scale": spec.scale, "base": spec.base, "scales": spec.scales, "axes": spec.axes,
            "variants": spec.variants, "per_variant": spec.per_variant, "seeds": spec.seeds,
            "report_table": spec.report_table}


# --------------------------------------------------------------------------------------------------------------
# Running


@dataclass
class SweepResult:
    sweep_dir: Path
    runs: list[dict[str, Any]]  # one row per run: variant, seed, run_dir, status, error

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] not in DONE]


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path = "runs/sweeps",
    data: Any = None,
    executor: str = "local",
    data_dir: str | None = None,
    progress: bool | None = False,
    ray_address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    on_epoch_end: Callable[[RunPlan, int, dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    outputs: bool = True,
) -> SweepResult:
    """Expand, validate and run a sweep; write status files, then the comparison table and figures.

    ``data``: a ``CifarArrays`` shared by every run (tests pass synthetic data); None loads CIFAR-10 once
    (``data_dir``, else the base config's ``data.dir``). ``on_epoch_end`` (local executor only) is called as
    ``f(plan, epoch, row)``. ``outputs``: write results.md/csv and figures at the end.
    """
    say = log or (lambda _msg: None)
    plans = expand(spec)  # raises before anything is written
    sweep_dir = sweep_dir_for(spec, out_dir)
    states = {p.rel_dir: run_state(sweep_dir / p.rel_dir, p.config) for p in plans}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(sweep_dir)  # two drivers of one sweep would race on its index files and its runs
    lock.acquire()
    try:
        remove_stale_temporaries(sweep_dir, subfolders=("figures",))  # a killed sweep's half-written index files
        atomic_write_yaml(sweep_dir / "sweep.yaml", spec_dict(spec))
        rows, todo = _plan_rows(plans, states, sweep_dir, say)
        ordered = [rows[p.rel_dir] for p in plans]
        write_status(sweep_dir, spec.name, ordered, "running")
        say(f"sweep {spec.name}: {len(plans)} runs in {sweep_dir} ({len(plans) - len(todo)} already finished, "
            f"{sum(r for _, r in todo)} to resume, {sum(not r for _, r in todo)} to start)")
        _run_todo(todo, rows, ordered, spec.name, sweep_dir, say, data=data, executor=executor,
                  data_dir=data_dir, progress=progress, ray_address=ray_address, cpus_per_run=cpus_per_run,
                  gpus_per_run=gpus_per_run, on_epoch_end=on_epoch_end)
        write_status(sweep_dir, spec.name, ordered, "finished")
        if outputs:
            _write_outputs(sweep_dir, ordered, say)
    finally:
        lock.release()
    return SweepResult(sweep_dir, ordered)


def _run_todo(todo: list[tuple[RunPlan, bool]], rows: dict[str, dict[str, Any]], ordered: list[dict[str, Any]],
              name: str, sweep_dir: Path, say: Callable[[str], None], *, data: Any, executor: str,
              data_dir: str | None, progress: bool | None, ray_address: str | None, cpus_per_run: float,
              gpus_per_run: float, on_epoch_end: Callable[[RunPlan, int, dict[str, Any]], None] | None) -> None:
    """Train the (plan, resume) pairs with the chosen executor, recording each outcome in the status files."""
    from cifarlab.experiments.executors import run_local, run_ray

    def record(plan: RunPlan, status: str, error: str | None) -> None:
        rows[plan.rel_dir].update(status=status, error=error)
        write_status(sweep_dir, name, ordered, "running")
        say(f"{plan.rel_dir}: {status}" + (f" ({error})" if error else ""))

    if todo and executor == "local":
        if data is None:
            data = _load_data(todo[0][0].cfg, data_dir, progress)
        try:
            run_local(todo, sweep_dir, data, record, progress=progress, on_epoch_end=on_epoch_end,
                      announce=lambda i, p, resume: say(f"[{i}/{len(todo)}] {p.rel_dir}: "
                                                        f"{'resuming' if resume else 'starting'}"))
        except KeyboardInterrupt:
            for r in ordered:  # started but unfinished: interrupted; never started: still pending
                if r["status"] == "pending" and (sweep_dir / r["run_dir"] / "config.yaml").is_file():
                    r["status"] = "interrupted"
            write_status(sweep_dir, name, ordered, "interrupted")
            raise
    elif todo and executor == "ray":
        run_ray(todo, sweep_dir, data, record, address=ray_address, cpus_per_run=cpus_per_run,
                gpus_per_run=gpus_per_run, data_dir=data_dir)
    elif todo:
        raise ConfigError(f"unknown executor '{executor}'; choose local or ray")


def _plan_rows(plans: list[RunPlan], states: dict[str, str], sweep_dir: Path,
               say: Callable[[str], None]) -> tuple[dict[str, dict[str, Any]], list[tuple[RunPlan, bool]]]:
    """Status rows of every run (finished ones from their summaries) and the (plan, resume) pairs to run."""
    previous = {r["run_dir"]: r for r in read_status(sweep_dir)}
    rows: dict[str, dict[str, Any]] = {}
    todo: list[tuple[RunPlan, bool]] = []
    for p in plans:
        state = states[p.rel_dir]
        row = {"variant": p.label, "seed": p.seed, "run_dir": p.rel_dir, "status": "pending", "error": None}
        if state in ("done", "diverged"):
            summary = json.loads((sweep_dir / p.rel_dir / "summary.json").read_text())
            row.update(status=summary.get("status"), error=summary.get("error"))
        else:
            todo.append((p, state == "resume"))
            if p.rel_dir in previous and previous[p.rel_dir].get("status") == "failed":
                say(f"retrying {p.rel_dir} (failed before: {previous[p.rel_dir].get('error')})")
        rows[p.rel_dir] = row
    return rows, todo


def _write_outputs(sweep_dir: Path, ordered: list[dict[str, Any]], say: Callable[[str], None]) -> None:
    from cifarlab.experiments.compare import write_results

    write_results(sweep_dir)
    try:
        from cifarlab.experiments.figures import write_sweep_figures

        write_sweep_manifest(sweep_dir, [r["run_dir"] for r in ordered], write_sweep_figures(sweep_dir))
    except Exception as exc:  # figures are a convenience: never lose a finished sweep's status over one
        say(f"warning: could not write figures ({type(exc).__name__}: {exc})")


def _load_data(cfg: RunConfig, data_dir: str | None, progress: bool | None) -> Any:
    # Once per process: every run of the sweep gets the same in-memory tensors (decoding 60k images per run
    # would cost more than a tiny run itself).
    from cifarlab.data import load_cifar10

    return load_cifar10(data_dir or cfg.data.dir, download=cfg.data.download, progress=progress)


def describe_plan(spec: SweepSpec, out_dir: str | Path = "runs/sweeps") -> list[dict[str, Any]]:
    """Dry run: each run with what a real run would do (start, resume, skip)."""
    sweep_dir = sweep_dir_for(spec, out_dir)
    action = {"new": "start", "resume": "resume", "done": "skip (finished)", "diverged": "skip (diverged)"}
    return [{"variant": p.label, "seed": p.seed, "run_dir": str(sweep_dir / p.rel_dir),
             "action": action[run_state(sweep_dir / p.rel_dir, p.config)]} for p in expand(spec)]
