"""Run directories in the report: what a run was (its settings), how stand-alone runs compare, which did not finish.

A run directory is what ``cifarlab train`` writes: ``config.yaml`` and ``env.json`` first, ``epochs.csv`` after
each epoch, ``summary.json`` at the end. A folder with the first but no summary is an interrupted run.
Statistics and the verdict on a comparison come from :mod:`cifarlab.experiments.compare` (the sweep's logic).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab.experiments import compare
from cifarlab.stats import mean_ci

# Keys that name or place a run but do not change what it computes: left out when runs are grouped by config.
BOOKKEEPING = frozenset({"name", "description", "out_dir", "tensorboard", "data.dir", "data.download",
                         "train.seed", "train.log_every"})


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)  # {} while the run has not finished
    epochs: list[dict[str, float]] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)  # env.json: written at the start, so interrupted runs have it

    @property
    def ok(self) -> bool:
        return self.summary.get("status") in compare.DONE

    @property
    def reached(self) -> int:
        """Last epoch written to epochs.csv (0 when none finished)."""
        return int(self.epochs[-1]["epoch"]) if self.epochs else int(self.summary.get("epochs_run") or 0)

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def state(self) -> str:
        """'completed', 'early_stopped', or what went wrong and when: 'interrupted at epoch 3 of 10'."""
        planned = self.summary.get("epochs_planned") or self.get("train.epochs")
        of = f" of {planned}" if planned else ""
        if not self.summary:
            return f"interrupted at epoch {self.reached}{of}" if self.reached else "interrupted before epoch 1 ended"
        status = str(self.summary.get("status", "unknown"))
        if self.ok:
            return status
        error = f" ({self.summary['error']})" if self.summary.get("error") else ""
        return f"{status} at epoch {self.reached}{of}{error}"


def is_run_dir(folder: Path) -> bool:
    return (folder / "config.yaml").is_file() and any((folder / f).is_file()
                                                       for f in ("summary.json", "env.json", "epochs.csv"))


def load_run(folder: Path) -> Run:
    """A run directory; a corrupt summary.json raises ValueError (the caller decides what the report says)."""
    import yaml

    from cifarlab.engine.metrics import read_csv

    config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    env_path = folder / "env.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    return Run(folder, config, summary, read_csv(folder / "epochs.csv"), env)


# --- settings -------------------------------------------------------------------------------------------------


def _options(run: Run) -> str:
    return ", ".join(f"{k}={v}" for k, v in (run.get("model.options") or {}).items()) or "none"


def _images(run: Run) -> str:
    s = run.summary
    if "train_images" in s:
        return f"{s['train_images']:,} / {s['val_images']:,} / {s['test_images']:,}"
    return "- (known when the run finishes)"


def _precision(resolved: str, configured: Any) -> str:
    """What the run computed in (as resolved on its machine) and what the config asked for: ``auto`` may mean
    bf16 on one CPU and fp32 on the next."""
    what = "fp32" if resolved == "off" else f"{resolved} autocast"
    return f"{what} (train.amp=auto)" if configured == "auto" and resolved != "auto" else what


def settings_rows(run: Run) -> list[list[str]]:
    """What a reader needs to tell a 1-epoch smoke run from the real one."""
    s, g = run.summary, run.get
    batch = f"{g('train.batch_size')}" + (f" x {g('train.grad_accum_steps')} accumulated"
                                          if (g("train.grad_accum_steps") or 1) > 1 else "")
    warmup = g("sched.warmup_epochs") or 0
    return [
        ["model", str(run.get("model.name", "-"))],
        ["model options", _options(run)],
        ["preset", g("preset") or "none"],
        ["training subset", "all" if g("data.subset") is None else f"{g('data.subset'):,} images"],
        ["images train / val / test", _images(run)],
        ["epochs planned", str(s.get("epochs_planned", g("train.epochs")))],
        ["batch size", batch],
        ["optimizer", f"{g('optim.name')}, lr {g('optim.lr')}, weight decay {g('optim.weight_decay')}"],
        ["schedule", f"{g('sched.name')}" + (f", warm-up {warmup} epochs" if warmup else "")],
        ["precision", _precision(str(s.get("amp", run.env.get("amp", g("train.amp")))), g("train.amp"))],
        ["device", str(s.get("device", run.env.get("device", g("train.device"))))],
        ["seed", str(g("train.seed"))],
    ]


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return out


def group_by_config(runs: list[Run]) -> tuple[list[str], dict[tuple[str, ...], list[Run]]]:
    """Runs grouped by their config minus seed and bookkeeping (first-seen order), and the keys that differ."""
    flats = [{k: v for k, v in flat(r.config).items() if k not in BOOKKEEPING} for r in runs]
    keys = sorted({k for f in flats for k in f})
    differ = [k for k in keys if len({f.get(k, "-") for f in flats}) > 1]
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run, f in zip(runs, flats):
        groups.setdefault(tuple(f.get(k, "-") for k in differ), []).append(run)
    return differ, groups


def label(differ: list[str], values: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(differ, values)) or "same config"


def variant_settings(runs: list[Run]) -> tuple[list[list[str]], list[str], list[list[str]]]:
    """For a sweep's runs: the settings shared by all (rows), and one row per config with the settings that
    differ (header, rows)."""
    per_run = [dict(settings_rows(r)) for r in runs]
    shared = [[k, v] for k, v in per_run[0].items() if k != "seed" and all(p[k] == v for p in per_run)]
    differ, groups = group_by_config(runs)
    rows = [[*values, str(len(rs)), _seeds(rs)] for values, rs in groups.items()]
    return shared, [*differ, "runs", "seeds"], rows


def _seeds(runs: list[Run]) -> str:
    return ", ".join(str(s) for s in sorted({int(r.get("train.seed") or 0) for r in runs}))


# --- stand-alone runs compared ----------------------------------------------------------------------------------


COMPARISON_CAPTION = ("One row per config (runs grouped by their resolved config minus the seed; 'config' names "
                      "the settings that differ). Final-epoch numbers of the finished runs, as mean ± sample std "
                      "(n-1) over seeds; 95 % CI: Student-t interval of the mean test accuracy (needs 2 seeds). "
                      "The test set is evaluated once per run; nothing is chosen on it.")


@dataclass
class Comparison:
    header: list[str]
    rows: list[list[str]]
    verdict: str


def _records(runs: list[Run]) -> tuple[list[compare.RunRecord], dict[str, list[Run]]]:
    differ, groups = group_by_config(runs)
    by_label = {label(differ, values): rs for values, rs in groups.items()}
    records = [compare.RunRecord(lb, int(r.get("train.seed") or 0), r.path, str(r.summary.get("status")),
                                 r.summary.get("error"), r.summary) for lb, rs in by_label.items() for r in rs]
    return records, by_label


def _ci(values: list[float]) -> str:
    _, _, lo, hi, n = mean_ci(values)
    return "-" if n < 2 else f"[{100 * lo:.2f}, {100 * hi:.2f}]"


def compare_runs(runs: list[Run]) -> Comparison:
    """Finished stand-alone runs, one row per config, with the sweep's statistics and verdict rule."""
    records, by_label = _records([r for r in runs if r.ok])
    variants = compare.aggregate(records)
    header = ["config", "runs", "seeds", "epochs", "train time (s)", "val acc (%)", "test acc (%)",
              "test acc 95 % CI (%)"]
    rows = [[v.variant, str(v.n_ok), _seeds(by_label[v.variant]), compare.fmt_stat(v.stats["epochs_run"], "epochs"),
             compare.fmt_stat(v.stats["train_time_s"], "seconds"), compare.fmt_stat(v.stats["final_val_acc"], "acc"),
             compare.fmt_stat(v.stats["test_acc"], "acc"), _ci([r.summary.get("test_acc") for r in v.runs])]
            for v in variants]
    return Comparison(header, rows, verdict(variants))


def verdict(variants: list[compare.VariantStats]) -> str:
    """What the table supports: the best config by validation accuracy, and whether its lead is more than noise."""
    best = compare.best_variant(variants)
    if best is None or len(variants) < 2:
        return "Only one config: nothing to compare."
    lead = f"Best config by mean final validation accuracy: {best.variant}."
    single = [v for v in variants if v.stats["test_acc"][2] < 2]
    if single:
        return (f"{lead} {len(single)} of {len(variants)} configs have only one seed, so this comparison is "
                "anecdotal: without a seed-to-seed spread, differences between configs are inconclusive. "
                "Run more seeds (train.seed=...) of each config to tell them apart.")
    others = [v for v in variants if v is not best]
    apart = [v.variant for v in others if compare.separated(best.stats["test_acc"], v.stats["test_acc"])]
    close = [v.variant for v in others if v.variant not in apart]
    text = f"{lead} On test accuracy, against each other config: "
    parts = [f"told apart from {', '.join(apart)} (mean ± std intervals do not overlap)"] if apart else []
    parts += [f"inconclusive against {', '.join(close)} (intervals overlap)"] if close else []
    return text + "; ".join(parts) + "."


def unfinished_rows(runs: list[Run], root: Path) -> list[list[str]]:
    """Runs that did not finish, with how far they got (they are left out of every mean)."""
    def last_val(r: Run) -> str:
        v = r.epochs[-1].get("val_acc", math.nan) if r.epochs else math.nan
        return "-" if not math.isfinite(v) else f"{100 * v:.2f}"

    return [[str(r.path.relative_to(root)) if r.path != root else r.path.name, r.state(), str(r.reached),
             last_val(r)] for r in runs if not r.ok]


UNFINISHED_HEADER = ["run", "state", "epochs done", "last val acc (%)"]
