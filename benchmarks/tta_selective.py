"""Selective TTA (``train.tta_confidence``): validation accuracy and evaluation time against full and no TTA.

For each run directory given, the run's evaluated weights score its validation split with the run's
``train.tta`` views applied to every image (full), to none (plain), and only to images whose plain-view
confidence is below each threshold. Rounds are interleaved (every setting once per round, in turn) so that
a noisy machine slows all settings alike; the time is the median over rounds. Read on the validation split,
never the test set: this is a choice of method.

    python benchmarks/tta_selective.py runs/quick-20261203-101500 --data-dir ../shared/datasets --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from cifarlab.analysis.explain.runs import load_run, load_splits
from cifarlab.engine.build import autocast_context
from cifarlab.engine.environment import cpu_flags
from cifarlab.engine.evaluate import evaluate
from cifarlab.engine.tta import tta_probs, tta_views

THRESHOLDS = (0.5, 0.7, 0.9, 0.95, 0.99)


def settings(tta: str) -> list[tuple[str, str, float | None]]:
    return [("plain", "none", None), ("full", tta, None), *((f"below {c:g}", tta, c) for c in THRESHOLDS)]


def measure(run_dir: Path, data_dir: str | None, rounds: int) -> None:
    run = load_run(run_dir, "last", "cpu")  # the same rebuild as `cifarlab eval` / `explain`
    splits = load_splits(run.cfg, data_dir=data_dir)
    autocast = autocast_context(run.cfg, torch.device("cpu"))  # the run's own precision (bf16 where native)
    if len(splits.val_y) == 0:
        raise SystemExit(f"{run_dir}: the run kept no validation split (data.val_size 0)")
    t = run.cfg.train
    rows = settings(t.tta)
    times: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    accs: dict[str, float] = {}
    with torch.no_grad():
        plain = torch.cat([tta_probs(run.model, splits.val_x[i : i + 1000], run.augment, autocast=autocast)
                           for i in range(0, len(splits.val_y), 1000)])
    for _ in range(rounds):
        for name, mode, conf in rows:
            start = time.perf_counter()
            result = evaluate(run.model, splits.val_x, splits.val_y, run.augment, nn.CrossEntropyLoss(),
                              t.eval_batch_size, autocast, tta=mode, tta_shift=t.tta_shift, tta_confidence=conf)
            times[name].append(time.perf_counter() - start)
            accs[name] = 100 * result.acc
    base = statistics.median(times["plain"])
    n_views = len(tta_views(splits.val_x[:1], t.tta))
    print(f"{run_dir}: {len(splits.val_y)} validation images, tta {t.tta}, {torch.get_num_threads()} threads, "
          f"CPU flags {' '.join(cpu_flags())}")
    print(f"{'setting':<12} {'val acc %':>9} {'views/img':>9} {'seconds':>8} {'x plain':>8}")
    for name, _, conf in rows:
        frac = 1.0 if conf is None else float((plain.max(1).values < conf).double().mean())
        views = 1 if name == "plain" else 1 + (n_views - 1) * frac
        sec = statistics.median(times[name])
        print(f"{name:<12} {accs[name]:>9.2f} {views:>9.2f} {sec:>8.2f} {sec / base:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run directories with checkpoints/last.pt")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for run_dir in args.runs:
        measure(run_dir, args.data_dir, args.rounds)


if __name__ == "__main__":
    main()
