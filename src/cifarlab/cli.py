"""The ``cifarlab`` command line. Each subcommand is one job; user mistakes print one line and exit 2.

The commands live in :mod:`cifarlab.commands`; none imports
torch, numpy or matplotlib before its handler runs, so ``cifarlab --help`` is fast.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable

from cifarlab.commands.bn_study import add_bn_study_parser, cmd_bn_study
from cifarlab.commands.experiments import (
    add_bench_parser,
    add_report_parser,
    add_sweep_parser,
    cmd_bench,
    cmd_report,
    cmd_sweep,
)
from cifarlab.commands.explain import add_explain_parser, cmd_explain
from cifarlab.commands.models import add_models_parser, add_presets_parser, cmd_models, cmd_presets
from cifarlab.commands.train import (
    add_config_parser,
    add_eval_parser,
    add_train_parser,
    cmd_config,
    cmd_eval,
    cmd_train,
)
from cifarlab.commands.tune import add_tune_parser, cmd_tune

EXAMPLES = """\
examples:
  cifarlab train --preset quick                              # ~89 % in minutes on a laptop CPU
  cifarlab train --preset quick --data-dir ../shared/datasets  # use a local CIFAR-10 archive
  cifarlab train -c my.yaml optim.lr=0.01 model.name=vgg_a_bn  # YAML + dotted overrides
  cifarlab train --resume runs/quick-20261123-101500         # continue an interrupted run
  cifarlab eval runs/quick-20261123-101500                   # test accuracy + per-class accuracy
  cifarlab models                                            # registered models, params, MACs
  cifarlab models --summary vgg_a                            # layer table of one model
  cifarlab presets                                           # shipped presets
  cifarlab sweep activations --data-dir ../shared/datasets   # a shipped experiment (quick scale)
  cifarlab sweep my_sweep.yaml --executor ray                # each run a Ray task (pip install cifarlab[ray])
  cifarlab bn-study                                          # VGG-A vs VGG-A+BN, Santurkar et al. (quick scale)
  cifarlab explain runs/quick-20261123-101500                # filters, Grad-CAM, mistakes, loss surfaces
  cifarlab train --preset fast_cpu                           # the fast recipe at CPU size
  cifarlab bench                                             # throughput vs bare compute / DataLoader; roofline
  cifarlab tune cnn3 --data-dir ../shared/datasets           # hyper-parameter search on validation (Optuna)
  cifarlab report runs/sweeps --out report.html              # one self-contained HTML report
"""

# (name, parser hook, handler), in the order `cifarlab --help` lists them
COMMAND_TABLE: list[tuple[str, Callable[[argparse._SubParsersAction], object], Callable[[argparse.Namespace], int]]] = [
    ("train", add_train_parser, cmd_train), ("eval", add_eval_parser, cmd_eval),
    ("models", add_models_parser, cmd_models), ("presets", add_presets_parser, cmd_presets),
    ("sweep", add_sweep_parser, cmd_sweep), ("bn-study", add_bn_study_parser, cmd_bn_study),
    ("explain", add_explain_parser, cmd_explain), ("report", add_report_parser, cmd_report),
    ("tune", add_tune_parser, cmd_tune), ("bench", add_bench_parser, cmd_bench),
    ("config", add_config_parser, cmd_config),
]
COMMANDS = {name: handler for name, _, handler in COMMAND_TABLE}


def build_parser() -> argparse.ArgumentParser:
    from cifarlab.version import __version__

    parser = argparse.ArgumentParser(
        prog="cifarlab",
        description="A fast, honest, reproducible CIFAR-10 lab.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _, add_parser, _ in COMMAND_TABLE:
        add_parser(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Options and KEY=VALUE overrides in any order after the command (``parse_intermixed_args``), so
    ``cifarlab train --preset quick train.epochs=1 --subset 2000 optim.lr=0.1`` reads as meant."""
    args, extras = parser.parse_known_args(argv)
    if not extras or not getattr(args, "command", None):
        return parser.parse_args(argv)  # all read (or a top-level mistake: argparse's own message)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    rest = argv[argv.index(args.command) + 1 :]
    return commands.choices[args.command].parse_intermixed_args(rest, namespace=argparse.Namespace(
        command=args.command))


def main(argv: list[str] | None = None) -> int:
    from cifarlab.errors import CifarlabError

    parser = build_parser()
    args = parse_args(parser, sys.argv[1:] if argv is None else list(argv))
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except CifarlabError as exc:
        print(f"cifarlab: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the OS refuses (read-only, full, not a folder, name too long): one line
        where = f" '{exc.filename}'" if exc.filename else ""
        kept = ("; every file is written atomically, so the last complete checkpoint is kept: free space and "
                "continue with --resume") if exc.errno == errno.ENOSPC else ""
        print(f"cifarlab: error: cannot write or read{where}: {exc.strerror or exc}{kept}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
