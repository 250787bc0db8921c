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
    from cifarlab.engine.trainer import train

    try:
        cfg = config_from_dict(config)
        if data is None:
            from cifarlab.data import load_cifar10

            data = load_cifar10(data_dir or cfg.data.dir, download=cfg.data.download, progress=False)
        summary = train(cfg, run_dir, resume=resume, data=data, progress=progress, on_epoch_end=on_epoch_end)
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
) -> None:
    """Run each (plan, resume) in turn in this process, with the shared in-memory data."""
    for plan, resume in todo:
        hook = None
        if on_epoch_end is not None:
            def hook(epoch: int, row: dict[str, Any], _plan: Any = plan) -> None:
                on_epoch_end(_plan, epoch, row)
        status, error = execute_run(plan.config, sweep_dir / plan.rel_dir, resume, data, progress, hook)
        record(plan, status, error)


def _ray_task(config: dict[str, Any], run_dir: str, resume: bool, data: Any, threads: int,
              data_dir: str | None) -> tuple[str, str | None]:
    # Ray sets OMP_NUM_THREADS to num_cpus in workers, but torch may already have its pool: pin it explicitly,
    # so N concurrent runs on one machine do not oversubscribe the cores.
    import torch

    torch.set_num_threads(max(1, threads))
    return execute_run(config, run_dir, resume, data, progress=False, data_dir=data_dir)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


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
    """One Ray task per run (``num_cpus``/``num_gpus`` each); the driver records results as they finish.

    With ``address`` the driver joins that cluster (run directories must then be on a file system every node
    sees); otherwise a local Ray instance with this machine's cores is started (and stopped afterwards).
    ``data``: put in the object store once and shared by every task; None lets each task load CIFAR-10 from
    ``data_dir`` / its config (the right choice on a cluster whose nodes have the data locally).
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'cifarlab[ray]' (or pip install ray)") from None
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ConfigError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0 (got {cpus_per_run}, {gpus_per_run})")
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, int(cpus_per_run + 0.999)), include_dashboard=False,
                     log_to_driver=False)
    try:
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(_ray_task)
        data_ref = ray.put(data) if data is not None else None
        pending = {
            task.remote(plan.config, str((sweep_dir / plan.rel_dir).resolve()), resume, data_ref,
                        int(max(1, cpus_per_run)), data_dir): plan
            for plan, resume in todo
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            plan = pending.pop(done[0])
            try:
                status, error = ray.get(done[0])
            except Exception as exc:  # the worker itself died (out of memory, node lost): record, go on
                status, error = "failed", _one_line(exc)
            record(plan, status, error)
    finally:
        if started_here:
            ray.shutdown()
