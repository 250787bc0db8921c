"""Per-step and per-epoch metrics of a run: ``steps.csv``, ``epochs.csv`` and optionally TensorBoard; and the
lines a run prints (``ProgressLog``: phases with their time, epoch lines with an ETA).

Rows are appended as training goes (so a crash loses at most the current epoch). On resume the files are cut
back to the last checkpointed step/epoch, so a resumed run's files equal those of an uninterrupted one.

TensorBoard (``tensorboard: true``): step and epoch scalars as training goes; at the end the final metrics
(``final/test_acc`` ...), the run's figures (every ``*.png`` of the run directory) and an HParams session of
the flat config, so a sweep folder given to ``tensorboard --logdir`` shows one HParams row per run.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cifarlab.io import write_csv

STEP_FIELDS = ("step", "epoch", "loss", "acc", "lr")
EPOCH_FIELDS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s",
)
# summary.json keys logged as TensorBoard scalars ``final/<key>`` and as the HParams metrics (those present)
FINAL_METRICS = ("test_acc", "test_loss", "test_acc_no_tta", "final_val_acc", "final_val_loss", "best_val_acc",
                 "train_time_s")
# Config keys that are no hyper-parameters (where things are and how they are shown): not in HParams
NOT_HPARAMS = ("name", "description", "preset", "out_dir", "tensorboard", "data.dir", "data.download",
               "train.device", "train.log_every")


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


def format_eta(seconds: float) -> str:
    """``42 s``, ``3.2 min``, ``1.5 h``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def percent(fraction: float) -> str:
    """An accuracy as every line and table of cifarlab prints it (files keep the fraction)."""
    return f"{100 * fraction:.2f} %"


def epoch_line(row: dict[str, Any], epochs: int, eta_s: float | None = None) -> str:
    """The one line printed per epoch (validation numbers only when the epoch was validated; the ETA of the
    epochs left when given)."""
    val = (f" val_loss {row['val_loss']:.4f} val_acc {percent(row['val_acc'])}"
           if row["val_acc"] == row["val_acc"] else "")
    eta = f"  ETA {format_eta(eta_s)}" if eta_s is not None else ""
    return (f"epoch {row['epoch']:>3}/{epochs}  train_loss {row['train_loss']:.4f} "
            f"train_acc {percent(row['train_acc'])}{val}  lr {row['lr']:.3g}  {row['seconds']:.1f}s{eta}")


class ProgressLog:
    """The lines a run prints on stdout: a header, one per phase with its time, resume, one per epoch.

    Through ``tqdm.write`` (the progress bars' own writer: a line never tears a bar) and flushed at once, so a
    log file or pipe (stdout not a terminal: no bars, block-buffered) shows each line as it happens. Quiet mode
    (``progress=False``) prints nothing; the bars follow ``progress`` separately (None: on a terminal only).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def line(self, text: str, end: str = "\n") -> None:
        if self.enabled:
            tqdm.write(text, end=end)
            sys.stdout.flush()

    @contextmanager
    def phase(self, what: str) -> Iterator[Callable[[str], None]]:
        """``what ...`` now (the phase may take minutes), ``detail, 1.2 s`` when it ends; yields ``note(detail)``."""
        details: list[str] = []
        start = time.perf_counter()
        self.line(f"{what} ...", end="")
        try:
            yield details.append
        except BaseException:
            self.line(" failed")
            raise
        self.line(" " + ", ".join([*details, f"{time.perf_counter() - start:.1f} s"]))


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The finite ``FINAL_METRICS`` of a summary (a diverged or test-withheld run has fewer)."""
    return {k: float(summary[k]) for k in FINAL_METRICS
            if isinstance(summary.get(k), (int, float)) and math.isfinite(summary[k])}


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The config as dotted ``key: value`` pairs TensorBoard's HParams take (lists and null as text)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        full = f"{prefix}{key}"
        if full in NOT_HPARAMS:
            continue
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{full}."))
        elif isinstance(value, (bool, int, float, str)):
            out[full] = value
        else:
            out[full] = json.dumps(value)
    return out


def read_png(path: Path) -> Any:
    """An RGB float image (H, W, 3) of a PNG, with matplotlib (no imaging dependency of its own)."""
    import matplotlib.image
    import numpy as np

    img = matplotlib.image.imread(str(path))
    return img[..., :3] if img.ndim == 3 else np.stack([img] * 3, axis=-1)


class MetricsWriter:
    """steps.csv and epochs.csv, plus a TensorBoard event file when asked. Every TensorBoard scalar is indexed by
    the optimizer step (epoch rows at the step that ends the epoch): one axis, so that a resumed run can purge
    what its killed predecessor logged after the checkpoint (TensorBoard's ``purge_step`` cuts one axis)."""

    def __init__(self, run_dir: Path, tensorboard: bool = False):
        self.run_dir = run_dir
        self.steps_path = run_dir / "steps.csv"
        self.epochs_path = run_dir / "epochs.csv"
        self.tensorboard, self.tb = tensorboard, None
        if tensorboard:
            try:
                import torch.utils.tensorboard  # noqa: F401  (fail before training, not at the first write)
            except ImportError:
                from cifarlab.errors import ConfigError

                raise ConfigError(
                    "tensorboard: true needs the tensorboard package: pip install 'cifarlab[tensorboard]'"
                ) from None

    def start(self, last_step: int, last_epoch: int) -> None:
        """Create the files, or cut them back to what the checkpoint we resume from had seen."""
        _truncate(self.steps_path, STEP_FIELDS, "step", last_step)
        _truncate(self.epochs_path, EPOCH_FIELDS, "epoch", last_epoch)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # Resuming: hide the events of steps after the checkpoint (a killed run logged them; we redo them).
            purge = last_step + 1 if last_step else None
            self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)

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

    def log_epoch(self, row: dict[str, Any], step: int) -> None:
        """One epochs.csv row; ``step``: the optimizer steps taken when the epoch ended (TensorBoard's axis)."""
        self._append(self.epochs_path, EPOCH_FIELDS, [row])
        if self.tb:
            for k in EPOCH_FIELDS[1:]:
                if row.get(k) is not None and row[k] == row[k]:
                    self.tb.add_scalar(f"epoch/{k}", row[k], step)

    def log_final(self, summary: dict[str, Any], config: dict[str, Any]) -> None:
        """TensorBoard only: the final metrics, the run's figures and its HParams session."""
        if not self.tb:
            return
        step, metrics = int(summary.get("steps") or 0), final_metrics(summary)
        for key, value in metrics.items():
            self.tb.add_scalar(f"final/{key}", value, step)
        for path in sorted(self.run_dir.glob("*.png")):
            self.tb.add_image(f"figures/{path.stem}", read_png(path), step, dataformats="HWC")
        from torch.utils.tensorboard.summary import hparams

        # Into this run's own event file (SummaryWriter.add_hparams would open a sub-run per call): the run's
        # folder is the HParams session, its final/* scalars the metric columns.
        for event in hparams(flat_hparams(config), {f"final/{k}": v for k, v in metrics.items()}):
            self.tb.file_writer.add_summary(event)
        self.tb.flush()

    def close(self) -> None:
        if self.tb:
            self.tb.close()
