"""``cifarlab sweep``, ``cifarlab report`` and ``cifarlab bench``: parsers and handlers.

User mistakes raise ``ConfigError``/``CifarlabError`` (one line, exit 2). ``cmd_sweep`` returns 0 when every run
finished, 1 when some failed or diverged, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys

SWEEP_EPILOG = """\
FILE is a sweep YAML (see docs/experiments.md) or the name of a shipped experiment preset:
  cifarlab sweep activations --scale quick --data-dir ../shared/datasets
  cifarlab sweep my_sweep.yaml --dry-run                 # list runs and what would happen (start/resume/skip)
  cifarlab sweep my_sweep.yaml --executor ray --cpus-per-run 2
Re-running the same command skips finished runs, resumes interrupted ones and retries failed ones.
experiment presets: {presets}
"""


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from cifarlab.commands.flags import add_spec_command
    from cifarlab.experiments.sweep import list_experiment_presets

    p = add_spec_command(subparsers, "sweep", "run a grid of configs x seeds (resumable), then tables and figures",
                         SWEEP_EPILOG.format(presets=", ".join(list_experiment_presets()) or "none"),
                         "sweep YAML, or an experiment preset name", "runs/sweeps", "sweep folders",
                         file_optional=True)
    p.add_argument("--list", action="store_true", help="list the experiment presets and the report table each "
                   "reproduces; run nothing")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs; train nothing")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: one run after another in this process; ray: one Ray task per run")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto or ray://host:10001) [default: start "
                   "a local Ray instance]")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray: CPUs reserved per run [1]")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray: GPUs reserved per run, may be "
                   "fractional [0]")
    p.add_argument("--data-dir", help="where CIFAR-10 is (loaded once for all runs) [default: the config's "
                   "data.dir, $CIFARLAB_DATA or ~/.cache/cifarlab]")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p


def cmd_sweep(args: argparse.Namespace) -> int:
    from cifarlab.errors import ConfigError
    from cifarlab.experiments.sweep import describe_plan, load_spec, run_sweep, sweep_dir_for

    if args.list:
        print_experiment_presets()
        return 0
    if args.file is None:
        raise ConfigError("sweep needs FILE (a sweep YAML or an experiment preset name); --list shows the presets")
    spec = load_spec(args.file, scale=args.scale)
    if args.dry_run:
        plan = describe_plan(spec, args.out)  # expands and validates every config
        print(f"sweep {spec.name} (scale {spec.scale or '-'}): {len(plan)} runs in {sweep_dir_for(spec, args.out)}")
        for row in plan:
            print(f"  {row['action']:<17} {row['variant']}  seed {row['seed']}")
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    try:
        result = run_sweep(spec, args.out, executor=args.executor, data_dir=args.data_dir,
                           progress=False if args.quiet else None, ray_address=args.ray_address,
                           cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, log=log)
    except KeyboardInterrupt:
        print(f"\ninterrupted; re-run the same command to resume (sweep folder: "
              f"{sweep_dir_for(spec, args.out)})", file=sys.stderr)
        return 130
    ok = len(result.runs) - len(result.failed)
    print(f"sweep {spec.name}: {ok}/{len(result.runs)} runs finished; table: {result.sweep_dir / 'results.md'}")
    if result.failed:
        print(f"cifarlab: {len(result.failed)} run(s) did not finish:", file=sys.stderr)
        for r in result.failed:
            print(f"  {r['run_dir']}: {r['status']}" + (f" ({r['error']})" if r.get("error") else ""),
                  file=sys.stderr)
        return 1
    return 0


def print_experiment_presets() -> None:
    """One block per experiment preset: name, the report table it reproduces, its description."""
    from cifarlab.experiments.sweep import experiment_preset_rows

    for name, table, about in experiment_preset_rows():
        print(f"{name:<22} reproduces: {table}")
        print(f"{'':<22} {about}")


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="one self-contained HTML page (+ Markdown) of every sweep and run under DIR",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  cifarlab report runs/sweeps/activations-quick --out activations.html",
    )
    p.add_argument("dir", metavar="DIR", help="folder holding sweeps and/or run directories")
    p.add_argument("--out", metavar="FILE.html", help="HTML file to write [default: DIR/report.html]; the "
                   "Markdown twin gets the same name with .md")
    p.add_argument("--title", help="page title")
    return p


def cmd_report(args: argparse.Namespace) -> int:
    from cifarlab.report.build import build_report

    html_path, md_path = build_report(args.dir, args.out, args.title)
    print(f"report: {html_path}  (Markdown: {md_path})")
    return 0


BENCH_EPILOG = """\
examples:
  cifarlab bench --data-dir ../shared/datasets                       # throughput + roofline (~6 min, 2-core CPU)
  cifarlab bench --models quick_cnn --steps 4 --rounds 2             # one model, shorter
  cifarlab bench --recipe fast_cpu --seeds 0,1,2 --models fast_net   # + time to accuracy of the fast recipe
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
    p.add_argument("--recipe", help="also train this preset (e.g. fast_cpu) and report time to accuracy")
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
