"""Train the quick_cnn preset at two learning rates from Python, compare them, write an HTML report.

    python examples/train_and_compare.py --data-dir ../shared/datasets      # real CIFAR-10, 3 epochs on 10k images
    python examples/train_and_compare.py --tiny                              # synthetic data, seconds (CI runs this)

Uses only the public API (docs/api.md): ``from cifarlab import ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarlab import build_report, evaluate, load_config, synthetic_data, train

TINY = ["model.options.widths=[8, 16, 16]", "data.val_size=100", "train.batch_size=50", "train.epochs=2",
        "train.amp=off"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="where CIFAR-10 is (default: $CIFARLAB_DATA or download)")
    parser.add_argument("--tiny", action="store_true", help="synthetic data and a tiny model (a smoke test)")
    parser.add_argument("--out", default="runs/example", help="parent folder of the two runs and the report")
    args = parser.parse_args()

    data = synthetic_data(600) if args.tiny else None
    common = TINY if args.tiny else ["train.epochs=3", "data.subset=10000"]
    if args.data_dir:
        common = [*common, f"data.dir={Path(args.data_dir).resolve()}"]
    summaries = {}
    for lr in (0.05, 0.2):
        cfg = load_config("quick_cnn", overrides=[*common, f"optim.lr={lr}", f"out_dir={args.out}", f"name=lr{lr}"])
        summaries[lr] = train(cfg, data=data, progress=False)

    print(f"{'optim.lr':>8}  {'val acc':>8}  {'test acc':>8}")
    for lr, s in summaries.items():
        print(f"{lr:>8}  {100 * s['final_val_acc']:>7.2f}%  {100 * s['test_acc']:>7.2f}%")
    if not args.tiny:  # eval rebuilds the model from the run directory and tests it again: the same number
        again = evaluate(Path(args.out) / "lr0.2")
        print(f"re-evaluated lr0.2: {100 * again['test_acc']:.2f} %")
    print(f"report: {build_report(args.out)}")


if __name__ == "__main__":
    main()
