"""How to combine the 6 TTA views: cifarlab's mean of softmax probabilities vs airbench94's weighted logits.

For every finished run of a sweep that kept a validation split, the 6 `flip_shift` views of each validation
image are scored once by the run's saved weights, then combined four ways (paired: same weights, same views):
  softmax_eq   mean of softmax probabilities, equal weights (what `train.tta` does)
  logit_eq     mean of logits, equal weights
  softmax_air  softmax probabilities weighted 1/4 (unshifted pair) and 1/8 (each shifted view), as airbench94
  logit_air    logits with those weights (airbench94's own combination)
Read on the validation split, never the test set: this is a choice of method.

    python benchmarks/tta_combine.py /tmp/abl/fast_ablations-quick --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from cifarlab.analysis.explain.runs import LoadedRun, load_run, load_splits
from cifarlab.data import Splits, load_cifar10
from cifarlab.engine.tta import tta_views

# View order of tta_views("flip_shift"): image, mirror, then the (+s,+s) and (-s,-s) shifts, each with its mirror.
AIRBENCH_WEIGHTS = torch.tensor([1 / 4, 1 / 4, 1 / 8, 1 / 8, 1 / 8, 1 / 8]).view(6, 1, 1)


@torch.no_grad()
def view_logits(run: LoadedRun, splits: Splits) -> torch.Tensor:
    """(6, N, K) float logits of the run's evaluated weights on the 6 views of each validation image."""
    batch, chunks = run.cfg.train.eval_batch_size, []
    for start in range(0, len(splits.val_y), batch):
        views = tta_views(splits.val_x[start : start + batch], "flip_shift", run.cfg.train.tta_shift,
                          run.augment.pad_mode)
        chunks.append(torch.stack([run.model(run.augment.eval(v)).float() for v in views]))
    return torch.cat(chunks, dim=1)


def combined_accuracies(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    def acc(scores: torch.Tensor) -> float:
        return 100.0 * (scores.argmax(1) == labels).double().mean().item()

    probs = logits.softmax(dim=2)
    return {
        "single_view": acc(logits[0]),
        "softmax_eq": acc(probs.mean(0)),
        "logit_eq": acc(logits.mean(0)),
        "softmax_air": acc((probs * AIRBENCH_WEIGHTS).sum(0)),
        "logit_air": acc((logits * AIRBENCH_WEIGHTS).sum(0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep output directory (variant/seedN/checkpoints/last.pt)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    runs = sorted(p.parent.parent for p in args.sweep_dir.glob("*/seed*/checkpoints/last.pt"))
    if not runs:
        raise SystemExit(f"no finished runs under {args.sweep_dir} (expected */seed*/checkpoints/last.pt)")
    data, rows = None, []
    for run_dir in runs:
        run = load_run(run_dir, "last", "cpu")  # the same rebuild as `cifarlab eval` / `explain`
        if data is None:  # decoded once: every run of a sweep reads the same archive
            data = load_cifar10(args.data_dir or run.cfg.data.dir)
        splits = load_splits(run.cfg, data=data)
        if len(splits.val_y) == 0:
            raise SystemExit(f"{run_dir}: the run kept no validation split (data.val_size 0); nothing to compare on")
        row = combined_accuracies(view_logits(run, splits), splits.val_y)
        rows.append(row)
        print(f"{run_dir.parent.name}/{run_dir.name}: " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()),
              flush=True)

    print(f"\nvalidation accuracy (%) over {len(rows)} runs; differences paired with softmax_eq (cifarlab's):")
    for key in rows[0]:
        diffs = [r[key] - r["softmax_eq"] for r in rows]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        print(f"  {key:12s} mean {statistics.mean(r[key] for r in rows):6.2f}   diff {statistics.mean(diffs):+.3f} "
              f"(sd {spread:.3f}; higher in {sum(x > 0 for x in diffs)}, lower in {sum(x < 0 for x in diffs)})")


if __name__ == "__main__":
    main()
