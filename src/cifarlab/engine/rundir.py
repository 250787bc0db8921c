"""Run directories: naming, creation, the resume check, and the one list of keys a resume may change."""

from __future__ import annotations

import copy
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from cifarlab.config import RunConfig, config_from_dict, read_yaml
from cifarlab.errors import CheckpointError

# Keys that may differ between a run and its resumption: where things are and how they are shown, not what is
# computed (a run's numbers do not depend on them). Everyone who checks "same run?" uses this list.
RESUME_SAFE_KEYS: tuple[tuple[str, ...], ...] = (
    ("train", "epochs"), ("train", "max_steps"), ("train", "device"), ("train", "log_every"),
    ("data", "dir"), ("data", "download"), ("name",), ("out_dir",), ("description",), ("preset",), ("tensorboard",),
)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the resume-safe keys: equal for a run and its resumption."""
    out = copy.deepcopy(config)
    for path in RESUME_SAFE_KEYS:
        node = out
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return out


def differing_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (for error messages)."""
    keys: list[str] = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += differing_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def check_same_run(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Refuse to continue a run with a config that would compute other numbers, naming the keys that differ."""
    diff = differing_keys(comparable(saved), comparable(current))
    if diff:
        safe = ", ".join(".".join(k) for k in RESUME_SAFE_KEYS)
        raise CheckpointError(f"'{where}' holds a run written with another config (differs in {', '.join(diff)}); "
                              f"only {safe} may change on resume")


def default_run_name(cfg: RunConfig, preset: str | None = None) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{(preset or cfg.preset).replace('-', '_') or cfg.model.name}-{stamp}"


def prepare_run_dir(cfg: RunConfig, run_dir: Path | None, resume: bool) -> Path:
    """The run's directory (not created here: nothing is written until the run has started)."""
    if run_dir is None:
        run_dir = Path(cfg.out_dir) / (cfg.name or default_run_name(cfg))
    run_dir = Path(run_dir)
    if not resume and (run_dir / "checkpoints" / "last.pt").exists():
        raise CheckpointError(
            f"run directory '{run_dir}' already holds a run; pass --resume to continue it or choose another name"
        )
    return run_dir


def remove_stale_temporaries(folder: Path, subfolders: tuple[str, ...] = ("checkpoints",)) -> int:
    """Temporary files of atomic writes a killed process left behind (``.<name>.<random>.tmp``) in ``folder`` and
    its ``subfolders``; how many. Call it only while owning the folder (no live writer can own one of them)."""
    folders = (folder, *(folder / name for name in subfolders))
    stale = [p for f in folders if f.is_dir() for p in f.glob(".*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


class RunLock:
    """``<run_dir>/.lock`` holding the owner's host and pid, created exclusively: two processes never share a
    run directory. A lock whose process is gone (same host, pid not alive) is stale and taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.owned = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _lock_owner(self.path)
                if owner is not None and not _stale(owner):
                    raise CheckpointError(f"directory '{self.path.parent}' is in use by process {owner['pid']} "
                                          f"on {owner['host']} (lock file {self.path}); wait for it or use another "
                                          "name") from None
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.owned = True
            return
        raise CheckpointError(f"could not lock '{self.path.parent}' (another process keeps taking it)")

    def release(self) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)
            self.owned = False


def _lock_owner(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable (a writer died mid-write): treated as stale


def _stale(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return False  # another machine's process: cannot tell, so it is not taken over
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, KeyError):
        return False
    return False


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"'{run_dir}' is not a run directory (no config.yaml)")
    return config_from_dict(read_yaml(path))


def finished_summary(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The summary of a run that already finished (its test set is never evaluated twice), else None.

    A completed run continues when asked for more (``train.epochs`` or ``train.max_steps`` raised)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is unreadable ({exc}); move it away to resume the run") from None
    t = cfg.train
    target = ("max_steps", t.max_steps) if t.max_steps is not None else ("epochs_planned", t.epochs)
    done = summary.get("status") == "early_stopped" or (
        summary.get("status") == "completed" and summary.get(target[0]) == target[1]
    )
    return summary if done else None


__all__ = ["RESUME_SAFE_KEYS", "check_same_run", "comparable", "default_run_name", "differing_keys",
           "finished_summary", "load_run_config", "prepare_run_dir"]
