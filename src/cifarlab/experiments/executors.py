"""Where sweep runs execute: in this process one after another (``local``), or as Ray tasks (``ray``).

Both call ``execute_run`` for each run, which turns any exception or divergence into a status record, so one
bad variant never stops the others. Both report each finished run to the driver through ``record``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cifarlab.errors import ConfigError

Record = Callable[[Any, str, "str | None"], None]  # record(plan, status, error)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


def execute_run(
    config: dict[str, Any],
    run_dir: str | Path,
    resume: bool,
    data: Any = None,
    progress: bool | None = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    data_dir: str | None = None,
) -> tuple[str, str | None]:
    """Train one run; return (status, one-line error or None). KeyboardInterrupt propagates (stops the sweep)."""
    from cifarlab.config import config_from_dict
    from cifarlab.engine.callbacks import EpochEndFunction
    from cifarlab.engine.trainer import train

    try:
        cfg = config_from_dict(config)
        if data is None:
            from cifarlab.data import load_cifar10

            data = load_cifar10(data_dir or cfg.data.dir, download=cfg.data.download, progress=False)
        callbacks = [EpochEndFunction(on_epoch_end)] if on_epoch_end is not None else []
        summary = train(cfg, run_dir, resume=resume, data=data, progress=progress, callbacks=callbacks)
    except Exception as exc:  # any failure of one run is recorded; the sweep goes on with the others
        return "failed", _one_line(exc)
    return str(summary.get("status")), summary.get("error")


def run_local(
    todo: list[tuple[Any, bool]],
    sweep_dir: Path,
    data: Any,
    record: Record,
    progress: bool | None = False,
    on_epoch_end: Callable[[Any, int, dict[str, Any]], None] | None = None,
    announce: Callable[[int, Any, bool], None] | None = None,
) -> None:
    """Run each (plan, resume) in turn in this process, with the shared in-memory data; ``announce(i, plan,
    resume)`` before the i-th (1-based) starts."""
    for i, (plan, resume) in enumerate(todo, 1):
        if announce is not None:
            announce(i, plan, resume)
        hook = None
        if on_epoch_end is not None:
            def hook(epoch: int, row: dict[str, Any], _plan: Any = plan) -> None:
                on_epoch_end(_plan, epoch, row)
        status, error = execute_run(plan.config, sweep_dir / plan.rel_dir, resume, data, progress, hook)
        record(plan, status, error)


def _pinned(func: Callable[..., Any], threads: int, *args: Any) -> Any:
    # Ray sets OMP_NUM_THREADS to num_cpus in workers, but torch may already have its pool: pin it explicitly,
    # so N concurrent tasks on one machine do not oversubscribe the cores.
    import torch

    torch.set_num_threads(max(1, threads))
    return func(*args)


def _ray_task(config: dict[str, Any], run_dir: str, resume: bool, data: Any,
              data_dir: str | None) -> tuple[str, str | None]:
    return execute_run(config, run_dir, resume, data, progress=False, data_dir=data_dir)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def ray_map(
    func: Callable[..., Any],
    jobs: list[tuple[Any, tuple[Any, ...]]],
    on_result: Callable[[Any, Any, str | None], None],
    address: str | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
    shared: dict[str, Any] | None = None,
) -> None:
    """Run ``func(*args)`` for each ``(key, args)`` as one Ray task; ``on_result(key, value, error)`` as each ends.

    ``func`` must be a module-level function (Ray pickles it by reference). With ``address`` the driver joins
    that cluster (outputs must then be on a file system every node sees); otherwise a local Ray instance with
    this machine's cores is started and stopped afterwards. ``shared``: large objects put once in the object
    store; an argument equal to ``("shared", name)`` is replaced by that object's reference. A task whose
    worker died (out of memory, node lost) is reported with ``value=None`` and the error; the others go on.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'cifarlab[ray]' (or pip install ray)") from None
    if cpus_per_task <= 0 or gpus_per_task < 0:
        raise ConfigError(f"cpus per run must be > 0 and gpus per run >= 0 (got {cpus_per_task}, {gpus_per_task})")
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, int(cpus_per_task + 0.999)), include_dashboard=False,
                     log_to_driver=False)
    try:
        if gpus_per_task > 0 and not ray.cluster_resources().get("GPU", 0):
            # Ray would queue such tasks forever: say so instead of hanging.
            raise ConfigError(f"{gpus_per_task} GPU per run requested but the Ray cluster has no GPU; "
                              f"use 0 GPUs per run (or a cluster with GPUs)")
        task = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=0)(_pinned)
        refs = {name: ray.put(obj) for name, obj in (shared or {}).items()}

        def resolve(arg: Any) -> Any:
            if isinstance(arg, tuple) and len(arg) == 2 and arg[0] == "shared" and arg[1] in refs:
                return refs[arg[1]]
            return arg

        threads = int(max(1, cpus_per_task))
        pending = {task.remote(func, threads, *(resolve(a) for a in args)): key for key, args in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(done[0])
            try:
                value, error = ray.get(done[0]), None
            except Exception as exc:  # the worker itself died, or the task raised: report, go on
                value, error = None, _one_line(exc)
            on_result(key, value, error)
    finally:
        if started_here:
            ray.shutdown()


def run_ray(
    todo: list[tuple[Any, bool]],
    sweep_dir: Path,
    data: Any,
    record: Record,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    data_dir: str | None = None,
) -> None:
    """One Ray task per sweep run (see ``ray_map``); the driver records results as they finish.

    ``data``: put in the object store once and shared by every task; None lets each task load CIFAR-10 from
    ``data_dir`` / its config (the right choice on a cluster whose nodes have the data locally).
    """
    jobs = [(plan, (plan.config, str((sweep_dir / plan.rel_dir).resolve()), resume,
                    ("shared", "data") if data is not None else None, data_dir))
            for plan, resume in todo]

    def on_result(plan: Any, value: Any, error: str | None) -> None:
        status, err = value if value is not None else ("failed", error)
        record(plan, status, err)

    ray_map(_ray_task, jobs, on_result, address=address, cpus_per_task=cpus_per_run, gpus_per_task=gpus_per_run,
            shared={"data": data} if data is not None else None)
