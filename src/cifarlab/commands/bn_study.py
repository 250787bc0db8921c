"""``cifarlab bn-study``: argparse hook for the main CLI (``add_bn_study_parser`` + ``cmd_bn_study``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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


def _comma_list(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            items = [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        if not items:
            raise argparse.ArgumentTypeError("expected a non-empty comma-separated list")
        return items

    parse.__name__ = f"list of {kind.__name__}"
    return parse


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


# Shorthand flags: each sets one settings key (the one table of parser and handler).
SETTING_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--data-dir", "data.dir", str, "where CIFAR-10 is"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N"),
    ("--parts", "parts", _comma_list(str), "comma-separated subset of train,band,landscape,ics,noisy"),
    ("--seeds", "seeds", _comma_list(int), "comma-separated seeds, one training per seed and arm"),
    ("--executor", "executor.kind", str, "where the trainings run: auto (Ray at paper scale if installed), "
     "local, ray"),
    ("--ray-address", "executor.address", str, "join this Ray cluster, e.g. auto"),
)


def add_bn_study_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bn-study", help="how BatchNorm helps optimisation: VGG-A vs VGG-A+BN (Santurkar et al. 2018)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted settings overrides")
    p.add_argument("--scale", choices=["quick", "paper"], default="quick", help="settings scale (default quick)")
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE", help="YAML settings (repeatable)")
    p.add_argument("--out", help="output folder (default runs/bn-study-<scale>)")
    for flag, key, kind, text in SETTING_FLAGS:
        p.add_argument(flag, type=kind, help=f"{text} [{key}]")
    p.add_argument("--reprobe", metavar="RUN_DIR", help="recompute the probes of one study run from its saved "
                   "probe points and compare them with the recorded numbers")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def cmd_bn_study(args: argparse.Namespace) -> int:
    from cifarlab.analysis.bn_study.settings import load_settings, to_dict
    from cifarlab.analysis.bn_study.study import run_study
    from cifarlab.config import deep_merge

    if args.reprobe:
        return _reprobe(args.reprobe, args.data_dir)
    extra: dict = {}
    for flag, key, _, _ in SETTING_FLAGS:  # each flag sets its settings key (dotted), as an override would
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            extra = deep_merge(extra, _nested(key, value))
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
