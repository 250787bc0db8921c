"""The public Python API: the same operations and names as the CLI (``cifarlab train|eval|sweep|report|...``).

Import it as ``from cifarlab import train, load_config, ...``: ``cifarlab/__init__.py`` loads this module on
first use, so ``import cifarlab`` (and ``cifarlab --help``) stays free of torch. Documented in docs/api.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cifarlab.config import RunConfig, load_config
from cifarlab.config import list_presets as shipped_presets


def make_config(preset_or_config: str | Path | RunConfig | None = None, *overrides: str) -> RunConfig:
    """A validated ``RunConfig`` from a preset name (``"quick"``), a YAML file, or a config, then overrides."""
    if isinstance(preset_or_config, RunConfig):
        if not overrides:
            return preset_or_config
        from cifarlab.config import config_from_dict, deep_merge, parse_override, to_dict

        merged = to_dict(preset_or_config)
        for text in overrides:
            merged = deep_merge(merged, parse_override(text))
        return config_from_dict(merged)
    if preset_or_config is None:
        return load_config(None, None, list(overrides))
    text = str(preset_or_config)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_config(None, [text], list(overrides))
    return load_config(text, None, list(overrides))


def train(preset_or_config: str | Path | RunConfig | None = "quick", *overrides: str, run_dir: str | Path | None = None,
          resume: bool = False, data: Any = None, progress: bool | None = None,
          callbacks: Iterable[Any] = ()) -> dict[str, Any]:
    """``cifarlab train``: train one run; return its summary (``RUN/summary.json``) plus ``run_dir``.

    ``train("quick", "train.epochs=3", "data.dir=../shared/datasets")`` names the run ``quick-<stamp>`` under
    ``runs/``, as the CLI does; ``resume=True`` with ``run_dir`` continues an interrupted run (its own config).
    ``data``: a ``CifarArrays`` to train on instead of CIFAR-10 (``synthetic_data(n)`` for a smoke run)."""
    from cifarlab.engine.rundir import default_run_name, load_run_config

    if resume:
        if run_dir is None:
            raise TypeError("train(resume=True) needs run_dir, the run to continue")
        cfg = make_config(load_run_config(Path(run_dir)), *overrides)
    else:
        cfg = make_config(preset_or_config, *overrides)
        if not cfg.name and run_dir is None:
            cfg.name = default_run_name(cfg)
    from cifarlab.engine.trainer import Trainer

    trainer = Trainer(cfg, run_dir, resume, data, progress, callbacks)
    return {**trainer.fit(), "run_dir": str(trainer.run_dir)}


def evaluate(run_dir: str | Path, weights: str | None = None, data_dir: str | None = None,
             device: str | None = None) -> dict[str, Any]:
    """``cifarlab eval``: test loss/accuracy, per-class accuracy and confusion matrix of a run's checkpoint, with
    the run's own averaging and TTA; ``weights`` None: the weights the run was tested on (``train.test_weights``)."""
    from cifarlab.engine.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(run_dir, weights, data_dir=data_dir, device=device)


def sweep(spec: str | Path | dict[str, Any], scale: str | None = None, out_dir: str | Path = "runs/sweeps",
          data: Any = None, data_dir: str | None = None, executor: str = "local", progress: bool | None = False,
          log: Any = None) -> Any:
    """``cifarlab sweep``: a shipped sweep name, a sweep YAML file or a sweep dict (base, axes, variants, seeds).

    Returns a ``SweepResult`` (``sweep_dir``, one row per run); the folder gets results.md/csv and figures."""
    from cifarlab.experiments.sweep import load_spec, parse_spec, run_sweep

    parsed = parse_spec(spec, scale, source="sweep dict") if isinstance(spec, dict) else load_spec(spec, scale)
    return run_sweep(parsed, out_dir, data=data, executor=executor, data_dir=data_dir, progress=progress, log=log)


def build_report(root: str | Path = "runs", out: str | Path | None = None, title: str | None = None) -> Path:
    """``cifarlab report`` (named build_report: ``cifarlab.report`` is the package): one self-contained HTML
    page (and its Markdown twin) for every run, sweep, study and explain folder under ``root``; the HTML path."""
    from cifarlab.report.build import build_report as write_report

    return write_report(root, out, title)[0]


def explain(run_dir: str | Path, data: Any = None, log: Any = None, **settings: Any) -> dict[str, Any]:
    """``cifarlab explain``: filters, attributions, mistakes, loss surfaces into ``RUN/explain/``; ``settings``
    are ExplainSettings fields (``parts=("filters", "mistakes")``, ``images=16``, ...)."""
    from cifarlab.analysis.explain.explain import explain_run
    from cifarlab.analysis.explain.settings import ExplainSettings

    return explain_run(run_dir, ExplainSettings(**settings), data=data, log=log or (lambda _line: None))


def bn_study(scale: str = "quick", *overrides: str, out: str | Path | None = None, log: Any = print) -> dict[str, Any]:
    """``cifarlab bn-study``: Santurkar et al.'s experiments; returns the findings summary."""
    from cifarlab.analysis.bn_study.settings import load_settings
    from cifarlab.analysis.bn_study.study import run_study

    settings = load_settings(scale, None, list(overrides))
    return run_study(settings, out or Path("runs") / f"bn-study-{settings.scale}", log=log)


def list_models() -> list[str]:
    """``cifarlab models``: the registered model names (``create_model(name, **options)`` builds one)."""
    from cifarlab.models import list_models as registered

    return list(registered())


def create_model(name: str, **options: Any) -> Any:
    """A registered model as an ``nn.Module`` (the same builder runs use)."""
    from cifarlab.models import create

    return create(name, **options)


def list_presets() -> list[str]:
    """``cifarlab presets``: shipped run presets (names as ``load_config``/``train`` take them)."""
    return shipped_presets()


def synthetic_data(n: int = 500, seed: int = 0) -> Any:
    """Random CIFAR-shaped data with a learnable class signal (``n`` train, n/2 test): runs without the archive."""
    from cifarlab.data.synthetic import synthetic_cifar

    return synthetic_cifar(n, seed)


# Not ``report``, ``models``, ``config``: those are cifarlab's subpackages/modules, and importing one sets the
# attribute ``cifarlab.<name>`` to the module, which would hide a function of that name.
__all__ = ["bn_study", "build_report", "create_model", "evaluate", "explain", "list_models", "list_presets",
           "load_config", "make_config", "sweep", "synthetic_data", "train"]

