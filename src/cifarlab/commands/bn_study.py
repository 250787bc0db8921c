"""``cifarlab bn-study``: argparse hook for the main CLI (``add_bn_study_parser`` + ``cmd_bn_study``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

EPILOG = """\
examples:
  cifarlab bn-study --data-dir ../shared/datasets      # quick scale: 5 seeds per arm (see docs/bn_study.md)
  cifarlab bn-study --data-dir ../shared/datasets --parts landscape,band
  cifarlab bn-study --scale paper --device cuda       # full VGG-A, 45k images, 15,000 steps
  cifarlab bn-study --scale paper --executor ray --ray-address auto   # trainings in parallel on a cluster
  cifarlab bn-study landscape.eta_count=10 train.lrs=[0.05,0.1] --seeds 0,1,2,3,4,5,6,7
  cifarlab bn-study landscape.grid=paper              # the paper's linear step-size grid [0.5, 4] x lr
  cifarlab bn-study --reprobe runs/bn-study-quick/runs/vgg_a_bn-sgd-lr0.1-800st-s0-probe-ics-hess-1a2b3c4d5e
re-running the same command skips the parts and runs that are complete and resumes an interrupted run from
its last saved epoch.
"""


def add_bn_study_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bn-study", help="how BatchNorm helps optimisation: VGG-A vs VGG-A+BN (Santurkar et al. 2018)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted settings overrides")
    p.add_argument("--scale", choices=["quick", "paper"], default="quick", help="settings scale (default quick)")
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE", help="YAML settings (repeatable)")
    p.add_argument("--out", help="output folder (default runs/bn-study-<scale>)")
    p.add_argument("--data-dir", help="where CIFAR-10 is [data.dir]")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N [device]")
    p.add_argument("--parts", help="comma-separated subset of train,band,landscape,ics,noisy [parts]")
    p.add_argument("--seeds", help="comma-separated seeds, one training per seed and arm [seeds]")
    p.add_argument("--reprobe", metavar="RUN_DIR", help="recompute the probes of one study run from its saved "
                   "probe points and compare them with the recorded numbers")
    p.add_argument("--executor", choices=["auto", "local", "ray"],
                   help="where the trainings run: auto (Ray at paper scale if installed), local, ray [executor.kind]")
    p.add_argument("--ray-address", help="join this Ray cluster, e.g. auto [executor.address]")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def cmd_bn_study(args: argparse.Namespace) -> int:
    from cifarlab.analysis.bn_study.settings import load_settings, to_dict
    from cifarlab.analysis.bn_study.study import run_study
    from cifarlab.errors import ConfigError

    extra: dict = {}
    if args.data_dir is not None:
        extra["data"] = {"dir": args.data_dir}
    if args.device is not None:
        extra["device"] = args.device
    if args.executor is not None or args.ray_address is not None:
        extra["executor"] = {k: v for k, v in (("kind", args.executor), ("address", args.ray_address))
                             if v is not None}
    if args.reprobe:
        return _reprobe(args.reprobe, args.data_dir)
    if args.seeds is not None:
        try:
            extra["seeds"] = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--seeds: got {args.seeds!r}, expected comma-separated integers (0,1,2,3,4)") from None
    if args.parts is not None:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        if not parts:
            raise ConfigError("--parts: give a comma-separated subset of train,band,landscape,ics,noisy")
        extra["parts"] = parts
    settings = load_settings(args.scale, args.config, list(args.overrides), extra)
    out = Path(args.out) if args.out else Path("runs") / f"bn-study-{settings.scale}"

    def log(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    log(f"bn-study ({settings.scale} scale) -> {out}")
    log(yaml.safe_dump(to_dict(settings), sort_keys=False).rstrip())
    summary = run_study(settings, out, log=log)
    if args.quiet:
        from cifarlab.analysis.bn_study.interpret import to_markdown

        print(to_markdown(summary), end="")
    return 0


def _reprobe(run_dir: str, data_dir: str | None) -> int:
    from cifarlab.analysis.bn_study.reprobe import reprobe_run
    from cifarlab.data import load_cifar10

    rows = reprobe_run(Path(run_dir), data=load_cifar10(data_dir) if data_dir else None)
    worst = max((r["max_rel_diff"] for r in rows), default=0.0)
    for r in rows:
        print(f"step {r['step']:>6}: max relative difference {r['max_rel_diff']:.2e}")
    print(f"{len(rows)} probe points recomputed; largest relative difference {worst:.2e}")
    return 0 if worst <= 1e-3 else 1


__all__ = ["add_bn_study_parser", "cmd_bn_study"]
