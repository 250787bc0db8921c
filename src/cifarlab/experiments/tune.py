"""``cifarlab tune``: hyper-parameter search on the validation split with Optuna (docs/tune.md).

The story of a tune:
  1. open (or reopen) the Optuna study in a real database: ``TUNE/study.db`` (SQLite) or ``--storage URL``;
  2. trials left ``RUNNING`` by a process of this host that is gone (kill -9, power cut) are marked failed and
     their parameters re-enqueued, with their run directory: the next worker resumes that run from its checkpoint;
  3. workers (this process, ``--jobs N`` local processes, or Ray tasks) loop ask -> train -> tell until the
     budget (``n_trials`` finished trials and/or ``timeout`` seconds) is spent. Each trial is an ordinary run
     directory under ``TUNE/trials/`` trained by the one Trainer with the **test split withheld**; a
     ``PruneOnValidation`` callback reports the validation metric per epoch and stops a trial the pruner rejects;
  4. the best trial's config is written as ``best_config.yaml`` and retrained once under ``TUNE/final/``, the only
     run of the tune that evaluates the test set; ``trials.csv``, ``tune.json``, figures and ``manifest.json``
     (read by ``cifarlab report``) follow (``experiments/tune_outputs.py``).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cifarlab.config import config_from_dict, deep_merge, to_dict
from cifarlab.engine.callbacks import Callback, TrainerView
from cifarlab.errors import CifarlabError, ConfigError
from cifarlab.experiments.sweep import dotted_to_nested
from cifarlab.experiments.tune_outputs import counted, write_tune_outputs
from cifarlab.experiments.tune_spec import ParamSpec, TuneSpec

Log = Callable[[str], None]
HOST = socket.gethostname()


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise CifarlabError("cifarlab tune needs Optuna: pip install -e '.[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def tune_dir_for(spec: TuneSpec, out: str | Path = "runs/tune") -> Path:
    return Path(out) / (f"{spec.name}-{spec.scale}" if spec.scale else spec.name)


def storage_url(spec: TuneSpec, tune_dir: Path, storage: str | None = None) -> str:
    """``--storage`` > the file's ``storage`` > ``sqlite:///TUNE/study.db`` (nothing to start)."""
    url = storage or spec.storage
    return url or f"sqlite:///{(Path(tune_dir) / 'study.db').resolve()}"


# --------------------------------------------------------------------------------------------------------------
# The study


def make_sampler(spec: TuneSpec, worker_index: int = 0) -> Any:
    """The sampler of one worker: each worker its own seed (``seed + worker_index``), so parallel workers never
    draw the same random points."""
    optuna, seed = optuna_module(), spec.seed + worker_index
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        return _grid_sampler_class()({k: p.choices for k, p in spec.space.items()}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, (spec.n_trials or 20) // 4)))


def _grid_sampler_class() -> type:
    """Optuna's GridSampler without its ``study.stop()`` once the grid is done (allowed only inside
    ``study.optimize``, not in an ask/tell loop); the budget stops the workers instead (n_trials <= grid size)."""
    grid = optuna_module().samplers.GridSampler

    class AskTellGridSampler(grid):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return AskTellGridSampler


def make_pruner(spec: TuneSpec) -> Any:
    p = optuna_module().pruners
    if spec.pruner == "none":
        return p.NopPruner()
    if spec.pruner == "hyperband":
        return p.HyperbandPruner(min_resource=1, reduction_factor=3)
    if spec.pruner == "halving":
        return p.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return p.MedianPruner(n_startup_trials=spec.prune_startup_trials, n_warmup_steps=spec.prune_warmup_epochs)


def serialised_sqlite(url: str) -> Any:
    """Optuna's storage for an SQLite URL, with every transaction begun ``BEGIN IMMEDIATE``.

    Python's sqlite3 driver starts a transaction only at the first write, so Optuna's read-then-claim of a
    waiting trial is not atomic: two workers can both read it as waiting and both run it (the intermittent
    "run directory is in use" failure of parallel tunes; tests/test_tune.py races 4 processes). An immediate
    transaction takes the write lock before the read, so the second worker waits, then sees the trial taken
    (SQLAlchemy's documented recipe for serialisable pysqlite transactions). Other databases lock the row
    (``SELECT ... FOR UPDATE``)."""
    import sqlalchemy

    storage = optuna_module().storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below is then the only one

    @sqlalchemy.event.listens_for(storage.engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    storage.engine.dispose()  # connections opened while the storage set itself up lack the hooks
    return storage


def open_study(spec: TuneSpec, url: str, worker_index: int = 0) -> Any:
    optuna = optuna_module()
    storage = serialised_sqlite(url) if url.startswith("sqlite") else url
    try:
        return optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True,
                                   direction=spec.direction, sampler=make_sampler(spec, worker_index),
                                   pruner=make_pruner(spec))
    except ValueError as exc:  # e.g. the study exists with another direction
        raise ConfigError(f"tune study '{spec.name}' in {url}: {exc}") from None


def suggest(trial: Any, space: dict[str, ParamSpec]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, p in space.items():
        if p.type == "categorical":
            params[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


def trial_config(spec: TuneSpec, params: dict[str, Any], seed: int, name: str) -> dict[str, Any]:
    """The validated config dict of one trial run: base + the trial's parameters + its seed."""
    values = deep_merge(deep_merge(spec.base, dotted_to_nested(params)), {"train": {"seed": seed}, "name": name})
    return to_dict(config_from_dict(values))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# A trial is asked for before its worker can stamp it with host and pid; one killed in between carries neither.
# Nobody can own it after this long, since a worker stamps its trial within milliseconds of asking.
UNSTAMPED_TIMEOUT_S = 600


def _orphaned(t: Any) -> bool:
    host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
    if pid is None:
        started = t.datetime_start
        return started is not None and (datetime.now() - started).total_seconds() > UNSTAMPED_TIMEOUT_S
    return host == HOST and (not _pid_alive(int(pid)) or int(pid) == os.getpid())


def requeue_orphans(study: Any, log: Log) -> int:
    """Trials left RUNNING by a dead process of this host: marked failed (``interrupted``), their parameters and
    run directory enqueued again. Trials of live processes or of other hosts are left alone."""
    optuna = optuna_module()
    storage, n = study._storage, 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not _orphaned(t):
            continue
        pid = t.user_attrs.get("pid")
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"run_dir": t.user_attrs.get("run_dir"),
                                                  "requeued_from": t.number})
        log(f"trial {t.number} was interrupted (process {pid} is gone): re-enqueued, its run resumes")
        n += 1
    return n


def enqueue_grid(study: Any, spec: TuneSpec) -> int:
    """Grid search: every point enqueued once, up front, in a seeded order. Workers then pop waiting trials, which
    the storage hands out atomically: parallel or distributed workers never run one point twice (Optuna's
    GridSampler alone picks points per process and can race). How many points were added."""
    import itertools
    import random

    keys = list(spec.space)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(spec.space[k].choices for k in keys))]
    random.Random(spec.seed).shuffle(points)
    before = len(study.get_trials(deepcopy=False))
    for point in points[: spec.n_trials]:
        study.enqueue_trial(point, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False)) - before


def budget_used(study: Any, below: int | None = None) -> int:
    """Finished or running trials that count (``below``: only those numbered below it)."""
    optuna = optuna_module()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL,
              optuna.trial.TrialState.RUNNING)
    return sum(counted(t) and (below is None or t.number < below)
               for t in study.get_trials(deepcopy=False, states=states))


# --------------------------------------------------------------------------------------------------------------
# One trial


class PruneOnValidation(Callback):
    """Reports the trial's validation metric after each validated epoch; stops the run (status ``pruned``) when
    the study's pruner says so. Measures nothing itself, so training is unchanged until it stops."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None

    def on_epoch_end(self, trainer: TrainerView, epoch: int, row: dict[str, Any]) -> None:
        value = row.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), epoch + 1)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            trainer.status = "pruned"


@dataclass
class TrialOutcome:
    number: int
    state: str  # complete | pruned | failed | diverged
    value: float | None = None
    error: str | None = None


def _train_seed(spec: TuneSpec, trial: Any, config: dict[str, Any], run_dir: Path, data: Any, first: bool,
                progress: bool | None) -> dict[str, Any]:
    import json

    from cifarlab.engine.trainer import train

    summary_path = run_dir / "summary.json"
    if summary_path.is_file():  # killed after the run finished but before the study heard of it
        summary = json.loads(summary_path.read_text())
        if summary.get("status") in ("pruned", "diverged", "completed", "early_stopped"):
            return summary
    callbacks = [PruneOnValidation(trial, spec.objective)] if first else []
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    return train(config_from_dict(config), run_dir, resume=resume, data=data, progress=progress,
                 callbacks=callbacks, withhold_test=True)


def run_trial(spec: TuneSpec, study: Any, trial: Any, tune_dir: Path, data: Any,
              progress: bool | None = False) -> TrialOutcome:
    """Train the trial's run(s) (one per seed; the pruner watches the first) and tell the study its outcome."""
    from cifarlab.experiments.executors import _one_line

    optuna = optuna_module()
    rel = trial.user_attrs.get("run_dir") or f"trials/t{trial.number:04d}"
    for key, value in (("host", HOST), ("pid", os.getpid()), ("run_dir", rel)):  # stamped first: see _orphaned
        trial.set_user_attr(key, value)
    params = suggest(trial, spec.space)
    values: list[float] = []
    try:
        for i, seed in enumerate(spec.seeds):
            run_dir = tune_dir / rel / (f"seed{seed}" if len(spec.seeds) > 1 else "")
            config = trial_config(spec, params, seed, f"{spec.name}-t{trial.number:04d}-seed{seed}")
            summary = _train_seed(spec, trial, config, run_dir, data, i == 0, progress)
            status = summary.get("status")
            if status in ("pruned", "diverged"):
                trial.set_user_attr("status", status)
                if status == "diverged":
                    trial.set_user_attr("error", str(summary.get("error")))
                state = optuna.trial.TrialState.PRUNED if status == "pruned" else optuna.trial.TrialState.FAIL
                study.tell(trial, state=state)
                return TrialOutcome(trial.number, "pruned" if status == "pruned" else "diverged",
                                    error=summary.get("error"))
            values.append(float(summary[f"final_{spec.objective}"]))
    except Exception as exc:  # one bad trial (an impossible combination, a crash) is recorded; the search goes on
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("error", _one_line(exc))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return TrialOutcome(trial.number, "failed", error=_one_line(exc))
    value = sum(values) / len(values)
    trial.set_user_attr("status", "complete")
    study.tell(trial, value)
    return TrialOutcome(trial.number, "complete", value)


# --------------------------------------------------------------------------------------------------------------
# Workers


class Progress:
    """One line per finished trial: value, best so far, pruned/failed counts, ETA."""

    def __init__(self, spec: TuneSpec, log: Log, start_used: int) -> None:
        self.spec, self.log, self.start = spec, log, time.monotonic()
        self.start_used, self.done_here = start_used, 0

    def __call__(self, study: Any, outcome: TrialOutcome) -> None:
        optuna = optuna_module()
        self.done_here += 1
        trials = [t for t in study.get_trials(deepcopy=False) if counted(t)]
        finished = [t for t in trials if t.state.is_finished()]
        n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
        n_failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = ""
        if complete:
            b = study.best_trial
            best = f"best {self.spec.show(b.value)} (trial {b.number})"
        value = self.spec.show(outcome.value) if outcome.value is not None else outcome.state
        total = self.spec.n_trials
        eta = ""
        if total:
            per_trial = (time.monotonic() - self.start) / self.done_here
            eta = f"  ETA {max(0, total - len(finished)) * per_trial / 60:.1f} min (this process's pace)"
        self.log(f"trial {outcome.number}: {value}  {best}  [{len(finished)}/{total or '-'} finished, "
                 f"{n_pruned} pruned, {n_failed} failed]{eta}")


def worker(spec: TuneSpec, tune_dir: Path, url: str, data: Any = None, data_dir: str | None = None,
           progress: bool | None = False, log: Log | None = None, deadline: float | None = None,
           threads: int | None = None, worker_index: int = 0, ready: Any = None) -> int:
    """Ask/train/tell until the budget is spent (a trial of a dead worker enqueued: it is taken first); the
    number of trials run here. Any number of workers, on any hosts, may share one study."""
    say = log or (lambda _msg: None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    study = open_study(spec, url, worker_index)
    show = Progress(spec, say, budget_used(study))
    if data is None:
        from cifarlab.data import load_cifar10

        cfg = config_from_dict(spec.base)
        data = load_cifar10(data_dir or cfg.data.dir, download=cfg.data.download, progress=False)
    if ready is not None:
        ready.set()  # set up: the driver starts its own worker once every process is ready (a fair start)
    ran = 0
    while deadline is None or time.time() < deadline:
        if spec.n_trials is not None and budget_used(study) >= spec.n_trials:
            break
        trial = study.ask()
        if (spec.n_trials is not None and "requeued_from" not in trial.user_attrs
                and budget_used(study, below=trial.number) >= spec.n_trials):
            trial.set_user_attr("surplus", True)  # another worker took the last trial meanwhile
            study.tell(trial, state=optuna_module().trial.TrialState.FAIL)
            break
        show(study, run_trial(spec, study, trial, tune_dir, data, progress))
        ran += 1
    return ran


def _worker_process(spec: TuneSpec, tune_dir: str, url: str, data: Any, data_dir: str | None,
                    deadline: float | None, threads: int | None, worker_index: int, ready: Any = None) -> None:
    import sys

    worker(spec, Path(tune_dir), url, data, data_dir, False, lambda m: print(m, file=sys.stderr, flush=True),
           deadline, threads, worker_index, ready)


def run_local_workers(spec: TuneSpec, tune_dir: Path, url: str, jobs: int, data: Any, data_dir: str | None,
                      progress: bool | None, log: Log, deadline: float | None, threads: int | None) -> None:
    """``jobs - 1`` worker processes (spawned: no forked torch state) plus this process, on one study."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    events = [ctx.Event() for _ in range(jobs - 1)]
    procs = [ctx.Process(target=_worker_process, daemon=True,
                         args=(spec, str(tune_dir), url, data, data_dir, deadline, threads, i + 1, events[i]))
             for i in range(jobs - 1)]
    for p in procs:
        p.start()
    for p, event in zip(procs, events):
        while not event.wait(0.5) and p.is_alive():
            pass
    try:
        worker(spec, tune_dir, url, data, data_dir, progress if jobs == 1 else False, log, deadline, threads)
    finally:
        for p in procs:
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        log(f"warning: {len(bad)} worker process(es) exited with {bad}; their trials are re-enqueued next time")


def _ray_worker(spec: TuneSpec, tune_dir: str, url: str, data: Any, data_dir: str | None, deadline: float | None,
                worker_index: int) -> None:
    _worker_process(spec, tune_dir, url, data, data_dir, deadline, None, worker_index)  # ray_map set the threads


def run_ray_workers(spec: TuneSpec, tune_dir: Path, url: str, jobs: int, address: str | None,
                    cpus_per_trial: float, gpus_per_trial: float, data_dir: str | None, deadline: float | None,
                    log: Log, data: Any = None) -> None:
    """``jobs`` Ray tasks through the sweeps' Ray path (``executors.ray_map``), each a worker on the shared study
    (the storage must be reachable from every node: a database URL, or an SQLite file on a shared file system).
    ``data``: in-memory arrays put in Ray's object store once; None: each task loads CIFAR-10 itself."""
    from cifarlab.experiments.executors import ray_map

    arg = ("shared", "data") if data is not None else None
    jobs_args = [(i, (spec, str(tune_dir.resolve()), url, arg, data_dir, deadline, i)) for i in range(jobs)]

    def on_result(index: Any, _value: Any, error: str | None) -> None:
        log(f"ray worker {index}: " + (f"failed ({error}); its trial is re-enqueued next time" if error else "done"))

    ray_map(_ray_worker, jobs_args, on_result, address=address, cpus_per_task=cpus_per_trial,
            gpus_per_task=gpus_per_trial, shared={"data": data} if data is not None else None)


# --------------------------------------------------------------------------------------------------------------
# The driver


@dataclass
class TuneResult:
    tune_dir: Path
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    final: dict[str, Any] | None  # summary of each final run (first seed), the only test evaluation
    n_trials: int  # finished trials that count (complete, pruned, failed)


def final_retrain(spec: TuneSpec, best: Any, tune_dir: Path, data: Any, progress: bool | None) -> dict[str, Any]:
    """The best trial's config, written as ``best_config.yaml`` and retrained once per seed under ``final/`` with
    the test set evaluated (a finished final run is reused on re-runs: the test set is never read twice)."""
    from cifarlab.engine.trainer import train
    from cifarlab.io import atomic_write_yaml

    config = trial_config(spec, best.params, spec.seeds[0], f"{spec.name}-best")
    atomic_write_yaml(tune_dir / "best_config.yaml", config)
    summaries = []
    for seed in spec.seeds:
        run_dir = tune_dir / "final" / (f"seed{seed}" if len(spec.seeds) > 1 else "")
        cfg = config_from_dict(trial_config(spec, best.params, seed, f"{spec.name}-best-seed{seed}"))
        resume = (run_dir / "checkpoints" / "last.pt").is_file() or (run_dir / "summary.json").is_file()
        summaries.append(train(cfg, run_dir, resume=resume, data=data, progress=progress))
    final = dict(summaries[0])
    accs = [s.get("test_acc") for s in summaries if s.get("test_acc") is not None]
    if len(summaries) > 1 and accs:
        final["test_acc_mean"] = sum(accs) / len(accs)
    return final


def run_tune(spec: TuneSpec, out_dir: str | Path = "runs/tune", data: Any = None, data_dir: str | None = None,
             storage: str | None = None, jobs: int = 1, executor: str = "local", ray_address: str | None = None,
             cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, progress: bool | None = False,
             log: Log | None = None, final: bool = True) -> TuneResult:
    """Search (resuming the study if it exists), then retrain and test the best config once; write outputs."""
    say = log or (lambda _msg: None)
    if jobs < 1:
        raise ConfigError(f"tune: --jobs must be >= 1, got {jobs}")
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor '{executor}'; choose local or ray")
    if executor == "local" and data is None:  # before anything is written: missing data leaves no study behind
        from cifarlab.data import load_cifar10

        cfg = config_from_dict(spec.base)
        data = load_cifar10(data_dir or cfg.data.dir, download=cfg.data.download, progress=progress)
    tune_dir = tune_dir_for(spec, out_dir)
    tune_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(spec, tune_dir, storage)
    study = open_study(spec, url)
    requeue_orphans(study, say)
    if spec.sampler == "grid":
        enqueue_grid(study, spec)
    say(f"tune {spec.name}: study '{spec.name}' in {url}; {budget_used(study)} of {spec.n_trials or '-'} trials "
        f"already run; trials in {tune_dir / 'trials'}")
    deadline = time.time() + spec.timeout if spec.timeout else None
    threads = max(1, int(cpus_per_trial)) if jobs > 1 or executor == "ray" else None
    if executor == "ray":
        run_ray_workers(spec, tune_dir, url, jobs, ray_address, cpus_per_trial, gpus_per_trial, data_dir, deadline,
                        say, data)
    else:
        run_local_workers(spec, tune_dir, url, jobs, data, data_dir, progress, say, deadline, threads)
    return _finish_tune(spec, study, tune_dir, data, data_dir, progress, say, final)


def _finish_tune(spec: TuneSpec, study: Any, tune_dir: Path, data: Any, data_dir: str | None,
                 progress: bool | None, say: Log, final: bool) -> TuneResult:
    from cifarlab.io import atomic_write_json, json_safe

    optuna = optuna_module()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    summary = None
    if best is not None and final:
        if data is None:
            from cifarlab.data import load_cifar10

            data = load_cifar10(data_dir or spec.base.get("data", {}).get("dir"), progress=False)
        say(f"best trial {best.number}: {spec.objective} {spec.show(best.value)} {best.params}; "
            "retraining it once with the test set")
        summary = final_retrain(spec, best, tune_dir, data, progress)
    result = TuneResult(tune_dir, best.number if best else None, best.value if best else None,
                        dict(best.params) if best else {}, summary,
                        sum(counted(t) and t.state.is_finished() for t in study.get_trials(deepcopy=False)))
    record = {"name": spec.name, "scale": spec.scale, "objective": spec.objective, "direction": spec.direction,
              "best_trial": result.best_trial, "best_value": result.best_value, "best_params": result.best_params,
              "final": {k: (summary or {}).get(k) for k in ("run", "status", "final_val_acc", "test_acc",
                                                             "test_loss", "test_acc_mean")} if summary else None}
    atomic_write_json(tune_dir / "tune.json", json_safe(record))
    write_tune_outputs(tune_dir, study, spec, record, say)
    return result
