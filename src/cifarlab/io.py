"""Files written whole or not at all, at the bottom layer (imports nothing from cifarlab but ``errors``).

Every file is written to a temporary file in the same directory, flushed, then renamed over the target with
``os.replace`` (atomic on POSIX and Windows): a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results should be readable like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_yaml(path: str | Path, obj: Any) -> None:
    import yaml

    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]], fields: Sequence[str] | None = None) -> None:
    """Rows of dicts -> an atomic CSV. ``fields``: the columns (default: every key, in first-seen order; other
    keys are dropped); None -> empty cell, float -> 6 significant digits. No rows and no fields: an empty file."""
    rows = list(rows)
    if fields is None:
        fields = list(dict.fromkeys(k for row in rows for k in row))
    if not fields:
        atomic_write_text(path, "")
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def json_safe(obj: Any) -> Any:
    """NaN/inf -> null (not JSON), numpy scalars -> Python numbers, tuples -> lists, keys -> str."""
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "atomic_write_yaml", "json_safe",
           "write_csv"]
