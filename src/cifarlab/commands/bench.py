"""``cifarlab bench``: training throughput vs bare compute and a per-image DataLoader; roofline."""

from __future__ import annotations

import argparse

BENCH_EPILOG = """\
examples:
  cifarlab bench --data-dir ../shared/datasets                       # throughput + roofline (~6 min, 2-core CPU)
  cifarlab bench --models quick_cnn --steps 4 --rounds 2             # one model, shorter
  cifarlab bench --recipe fast-cpu --seeds 0,1,2 --models fast_net   # + time to accuracy of the fast recipe
"""


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="training throughput vs bare compute and vs a per-image DataLoader pipeline; roofline",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=BENCH_EPILOG)
    p.add_argument("--data-dir", help="where CIFAR-10 is")
    p.add_argument("--models", default="quick_cnn,vgg_a,fast_net",
                   help="comma-separated subset of quick_cnn,vgg_a,fast_net (default: all three)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds, best kept (default 3)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional pipeline")
    p.add_argument("--recipe", help="also train this preset (e.g. fast-cpu) and report time to accuracy")
    p.add_argument("--seeds", default="0", help="seeds of --recipe, comma-separated (default 0)")
    p.add_argument("--out", default="runs/bench", help="where bench.json (and recipe runs) go")
    p.add_argument("recipe_overrides", nargs="*", metavar="KEY=VALUE", help="overrides of --recipe's config")
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cifarlab.config import load_config
    from cifarlab.data import load_cifar10
    from cifarlab.errors import ConfigError
    from cifarlab.experiments.bench import DEFAULT_MODELS, format_table, run_bench

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.steps < 1 or args.rounds < 1 or args.workers < 0:
        raise ConfigError(f"bench: --steps and --rounds must be >= 1 and --workers >= 0 (got {args.steps}, "
                          f"{args.rounds}, {args.workers})")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"bench: --seeds must be comma-separated integers, got {args.seeds!r}") from None
    unknown = [m for m in models if m not in DEFAULT_MODELS]
    if unknown:  # before the (slower) data loading
        raise ConfigError(f"bench: unknown model(s) {', '.join(unknown)}; valid: {', '.join(DEFAULT_MODELS)}")
    if args.recipe:
        load_config(args.recipe, overrides=list(args.recipe_overrides))  # a bad preset/override fails now
    data = load_cifar10(args.data_dir)
    report = run_bench(data, Path(args.out), models, args.steps, args.rounds, args.workers, args.recipe, seeds,
                       recipe_overrides=list(args.recipe_overrides))
    if report["models"]:
        print(format_table(report))
    return 0
