"""``cifarlab sweep``: a grid of configs x seeds. User mistakes raise ``ConfigError`` (one line, exit 2);
``cmd_sweep`` returns 0 when every run finished, 1 when some failed or diverged, 130 when interrupted.
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
    from cifarlab.experiments.sweep import list_experiment_presets

    p = subparsers.add_parser(
        "sweep", help="run a grid of configs x seeds (resumable), then tables and figures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=SWEEP_EPILOG.format(presets=", ".join(list_experiment_presets()) or "none"),
    )
    p.add_argument("file", metavar="FILE", help="sweep YAML, or an experiment preset name")
    p.add_argument("--out", default="runs/sweeps", help="parent folder of sweep folders [default: runs/sweeps]")
    p.add_argument("--scale", help="named block of the file's `scales:` (e.g. quick, full) [default: its `scale:`]")
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
    from cifarlab.experiments.sweep import describe_plan, load_spec, run_sweep, sweep_dir_for

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
