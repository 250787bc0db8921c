"""The ``cifarlab`` command line. Each subcommand is one job; user mistakes print one line and exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cifarlab.analysis.bn_study.cli import add_bn_study_parser, cmd_bn_study
from cifarlab.analysis.explain.cli import add_explain_parser, cmd_explain
from cifarlab.experiments.cli import (
    add_bench_parser,
    add_report_parser,
    add_sweep_parser,
    cmd_bench,
    cmd_report,
    cmd_sweep,
)

EXAMPLES = """\
examples:
  cifarlab train --preset quick                              # small CNN, minutes on a laptop CPU
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
  cifarlab train --preset fast-cpu                           # the fast recipe at CPU size
  cifarlab bench                                             # throughput vs bare compute / DataLoader; roofline
  cifarlab report runs/sweeps --out report.html              # one self-contained HTML report
"""


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one model (config: defaults < --preset < -c FILE < key=value overrides)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="overrides: any config key, dotted, e.g. optim.lr=0.01 train.epochs=5 model.options.width_mult=0.5\n"
        "see `cifarlab config --preset quick` for every key and its value",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--preset", help="start from a shipped preset (see `cifarlab presets`)")
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)")
    p.add_argument("--data-dir", help="where CIFAR-10 is (or goes): folder, extracted folder or .tar.gz "
                   "[data.dir; default $CIFARLAB_DATA or ~/.cache/cifarlab]")
    p.add_argument("--subset", type=int, help="train on N training images only [data.subset]")
    p.add_argument("--epochs", type=int, help="[train.epochs]")
    p.add_argument("--seed", type=int, help="[train.seed]")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N [train.device]")
    p.add_argument("--name", help="run name [name]")
    p.add_argument("--out", help="parent folder of run directories [out_dir; default runs]")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def _train_config(args: argparse.Namespace) -> Any:
    from cifarlab.config import load_config

    flag_overrides = []
    for flag, key in (("data_dir", "data.dir"), ("subset", "data.subset"), ("epochs", "train.epochs"),
                      ("seed", "train.seed"), ("device", "train.device"), ("name", "name"), ("out", "out_dir")):
        value = getattr(args, flag)
        if value is not None:
            flag_overrides.append(f"{key}={json.dumps(value)}")
    return load_config(args.preset, args.config, flag_overrides + list(args.overrides))


def cmd_train(args: argparse.Namespace) -> int:
    from cifarlab.config import config_from_dict, deep_merge, parse_override, to_dict
    from cifarlab.engine.rundir import default_run_name, load_run_config
    from cifarlab.engine.trainer import Trainer
    from cifarlab.errors import ConfigError

    if args.resume:
        run_dir = Path(args.resume)
        if args.preset or args.config:
            raise ConfigError("--resume continues a run with its own config.yaml; drop --preset/-c")
        cfg = load_run_config(run_dir)
        extra = {k: v for k, v in (("train.epochs", args.epochs), ("train.device", args.device)) if v is not None}
        merged = to_dict(cfg)
        for text in [f"{k}={v}" for k, v in extra.items()] + list(args.overrides):
            merged = deep_merge(merged, parse_override(text))
        cfg = config_from_dict(merged)
    else:
        cfg = _train_config(args)
        if not cfg.name:
            cfg.name = default_run_name(cfg, args.preset)
        run_dir = Path(cfg.out_dir) / cfg.name
    progress = False if args.quiet else None
    trainer = Trainer(cfg, run_dir, resume=bool(args.resume), progress=progress)
    print(f"run directory: {trainer.run_dir}", file=sys.stderr)
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: cifarlab train --resume {trainer.run_dir}", file=sys.stderr)
        return 130
    _print_summary(summary)
    if summary["status"] == "diverged":
        print(f"cifarlab: error: run diverged ({summary.get('error')}); see {trainer.run_dir}/summary.json. "
              "Lower optim.lr or enable optim.grad_clip.", file=sys.stderr)
        return 3
    return 0


def _tested_weights(summary: dict[str, Any]) -> str:
    """E.g. "last weights", "best weights, EMA, TTA flip": what exactly the test accuracy was measured on."""
    parts = [f"{summary.get('test_weights', '-')} weights"]
    if summary.get("averaged"):
        parts.append(str(summary["averaged"]).upper())
    if summary.get("tta") not in (None, "none"):
        parts.append(f"TTA {summary['tta']}")
    return ", ".join(parts)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(v: Any) -> str:
        return f"{100 * v:.2f} %" if isinstance(v, float) else "-"

    def num(v: Any, fmt: str = ".4f") -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    table = Table(title=f"run {summary['run']} ({summary['status']})", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("model", summary["model"]),
        ("parameters", f"{summary['params']:,}"),
        ("MACs / image", f"{summary['macs'] / 1e6:,.1f} M"),
        ("device", summary["device"]),
        ("train / val / test images", f"{summary['train_images']:,} / {summary['val_images']:,} / "
                                      f"{summary['test_images']:,}"),
        ("epochs run", f"{summary['epochs_run']} of {summary['epochs_planned']}"),
        ("train time", f"{summary['train_time_s']:.1f} s ({num(summary['s_per_epoch'], '.1f')} s/epoch)"),
        ("best val acc (epoch)", f"{pct(summary['best_val_acc'])} ({summary['best_epoch']})"),
        ("final train loss / acc", f"{num(summary.get('final_train_loss'))} / {pct(summary.get('final_train_acc'))}"),
        ("final val loss / acc", f"{num(summary.get('final_val_loss'))} / {pct(summary.get('final_val_acc'))}"),
        (f"test loss / acc ({_tested_weights(summary)})",
         f"{num(summary.get('test_loss'))} / {pct(summary.get('test_acc'))}"),
    ]
    for k, v in rows:
        table.add_row(k, str(v))
    Console(stderr=False).print(table)


def cmd_eval(args: argparse.Namespace) -> int:
    from cifarlab.engine.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.target, weights=args.weights, data_dir=args.data_dir, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['checkpoint']} on {result['test_images']:,} test images")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, acc in result["per_class_acc"].items():
        table.add_row(name, f"{100 * acc:.2f} %")
    table.add_row("[bold]all[/bold]", f"[bold]{100 * result['test_acc']:.2f} %[/bold]")
    Console().print(table)
    print(f"test loss {result['test_loss']:.4f}  test accuracy {100 * result['test_acc']:.2f} %")
    return 0


def _parse_options(items: list[str]) -> dict[str, Any]:
    from cifarlab.config import parse_override

    options: dict[str, Any] = {}
    for item in items:
        options.update(parse_override(item))
    return options


def cmd_models(args: argparse.Namespace) -> int:
    from cifarlab.models import create, list_models
    from cifarlab.models.summary import format_layer_table, layer_table, model_info

    options = _parse_options(args.option)
    if args.summary:
        model = create(args.summary, **options)
        print(format_layer_table(layer_table(model)))
        return 0
    from rich.console import Console
    from rich.table import Table

    names = args.names or list_models()
    table = Table(title="cifarlab models (10 classes, 32x32 input)")
    table.add_column("name")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("description")
    for name in names:
        info = model_info(name, **options)
        table.add_row(name, f"{info['params']:,}", f"{info['macs'] / 1e6:,.1f} M", info["description"])
    Console(width=max(120, Console().width)).print(table)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from cifarlab.config import list_presets, preset_dict

    for name in list_presets():
        about = preset_dict(name).get("description", "")
        print(f"{name:<16} {about}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from cifarlab.config import to_dict

    print(yaml.safe_dump(to_dict(_train_config(args)), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifarlab",
        description="A fast, honest, reproducible CIFAR-10 lab.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    from cifarlab import __version__

    parser.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)

    p = sub.add_parser("eval", help="evaluate a run directory or checkpoint on the test set")
    p.add_argument("target", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--weights", choices=["last", "best"], default="last", help="which checkpoint of a run dir")
    p.add_argument("--data-dir", help="where CIFAR-10 is (default: the run's data.dir)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("models", help="list models with parameters and MACs, or one model's layer table")
    p.add_argument("names", nargs="*", help="only these models")
    p.add_argument("--summary", metavar="NAME", help="print the layer table (output shapes, params) of NAME")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option, e.g. "
                   "width_mult=0.5")

    sub.add_parser("presets", help="list shipped presets")
    add_sweep_parser(sub)
    add_bn_study_parser(sub)
    add_explain_parser(sub)
    add_report_parser(sub)
    add_bench_parser(sub)

    p = sub.add_parser("config", help="print the resolved config (same arguments as train)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--preset")
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE")
    for flag in ("--data-dir", "--device", "--name", "--out"):
        p.add_argument(flag)
    for flag in ("--subset", "--epochs", "--seed"):
        p.add_argument(flag, type=int)
    return parser


COMMANDS = {
    "train": cmd_train, "eval": cmd_eval, "models": cmd_models, "presets": cmd_presets, "config": cmd_config,
    "sweep": cmd_sweep, "bn-study": cmd_bn_study, "report": cmd_report, "bench": cmd_bench,
    "explain": cmd_explain,
}


def main(argv: list[str] | None = None) -> int:
    from cifarlab.errors import CifarlabError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except CifarlabError as exc:
        print(f"cifarlab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
