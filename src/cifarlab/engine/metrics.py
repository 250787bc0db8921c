"""Per-step and per-epoch metrics of a run: ``steps.csv``, ``epochs.csv`` and optionally TensorBoard.

Rows are appended as training goes (so a crash loses at most the current epoch). On resume the files are cut
back to the last checkpointed step/epoch, so a resumed run's files equal those of an uninterrupted one.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cifarlab.io import write_csv

STEP_FIELDS = ("step", "epoch", "loss", "acc", "lr")
EPOCH_FIELDS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s",
)


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as floats (empty cells -> NaN)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) if v != "" else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]


def _truncate(path: Path, fields: Sequence[str], key: str, keep_upto: float) -> None:
    write_csv(path, [{k: _fmt(r[k]) for k in fields} for r in read_csv(path) if r[key] <= keep_upto], fields)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        if v != v:  # NaN -> empty cell
            return ""
        return int(v) if v.is_integer() and abs(v) < 2**53 else f"{v:.6g}"
    return v


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The one line printed per epoch (validation numbers only when the epoch was validated)."""
    val = f" val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f}" if row["val_acc"] == row["val_acc"] else ""
    return (f"epoch {row['epoch']:>3}/{epochs}  train_loss {row['train_loss']:.4f} "
            f"train_acc {row['train_acc']:.4f}{val}  lr {row['lr']:.3g}  {row['seconds']:.1f}s")


class MetricsWriter:
    def __init__(self, run_dir: Path, tensorboard: bool = False):
        self.steps_path = run_dir / "steps.csv"
        self.epochs_path = run_dir / "epochs.csv"
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from cifarlab.errors import ConfigError

                raise ConfigError(
                    "tensorboard: true needs the tensorboard package: pip install 'cifarlab[tensorboard]'"
                ) from None
            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def start(self, last_step: int, last_epoch: int) -> None:
        """Create the files, or cut them back to what the checkpoint we resume from had seen."""
        _truncate(self.steps_path, STEP_FIELDS, "step", last_step)
        _truncate(self.epochs_path, EPOCH_FIELDS, "epoch", last_epoch)

    def _append(self, path: Path, fields: Sequence[str], rows: list[dict[str, Any]]) -> None:
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            for r in rows:
                writer.writerow({k: _fmt(r.get(k, float("nan"))) for k in fields})

    def log_steps(self, rows: list[dict[str, Any]]) -> None:
        self._append(self.steps_path, STEP_FIELDS, rows)
        if self.tb:
            for r in rows:
                self.tb.add_scalar("step/loss", r["loss"], r["step"])
                self.tb.add_scalar("step/lr", r["lr"], r["step"])

    def log_epoch(self, row: dict[str, Any]) -> None:
        self._append(self.epochs_path, EPOCH_FIELDS, [row])
        if self.tb:
            for k in EPOCH_FIELDS[1:]:
                if row.get(k) is not None and row[k] == row[k]:
                    self.tb.add_scalar(f"epoch/{k}", row[k], row["epoch"])

    def close(self) -> None:
        if self.tb:
            self.tb.close()
