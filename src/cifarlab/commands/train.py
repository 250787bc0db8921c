"""``cifarlab train``, ``cifarlab config`` (same arguments) and ``cifarlab eval``: parsers and handlers; torch is
imported only when a command runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Shorthand flags of `train` and `config`: each one names the config key it sets (the one table of both).
CONFIG_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--data-dir", "data.dir", str, "where CIFAR-10 is (or goes): folder, extracted folder or .tar.gz (default "
     "$CIFARLAB_DATA or ~/.cache/cifarlab)"),
    ("--subset", "data.subset", int, "train on N training images only"),
    ("--epochs", "train.epochs", int, ""),
    ("--seed", "train.seed", int, ""),
    ("--device", "train.device", str, "auto, cpu, cuda, cuda:N"),
    ("--name", "name", str, "run name"),
    ("--out", "out_dir", str, "parent folder of run directories (default runs)"),
)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
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
    for flag, key, kind, text in CONFIG_FLAGS:
        p.add_argument(flag, type=kind, help=f"{text} [{key}]".lstrip())
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def _train_config(args: argparse.Namespace) -> Any:
    from cifarlab.config import load_config

    flag_overrides = []
    for flag, key, _, _ in CONFIG_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            flag_overrides.append(f"{key}={json.dumps(value)}")
    notes: list[str] = []
    cfg = load_config(args.preset, args.config, flag_overrides + list(args.overrides), log=notes.append)
    for line in notes:  # which settings a switch of optim.name dropped; only for a valid config (else: the error)
        print(f"cifarlab: {line}", file=sys.stderr)  # stderr: `config` prints YAML on stdout
    if cfg.data.dir:  # stored absolute: the run resumes (and `eval`s) from any folder
        cfg.data.dir = str(Path(cfg.data.dir).expanduser().resolve())
    return cfg


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
        fixed = [f"--{f.replace('_', '-')}" for f in ("subset", "seed", "name", "out") if getattr(args, f) is not None]
        if fixed:
            raise ConfigError(f"--resume continues the run in '{run_dir}' as it was configured: drop "
                              f"{', '.join(fixed)} (only --epochs, --device, --data-dir may change)")
        data_dir = str(Path(args.data_dir).resolve()) if args.data_dir is not None else None
        extra = {k: v for k, v in (("train.epochs", args.epochs), ("train.device", args.device),
                                   ("data.dir", data_dir)) if v is not None}
        merged = to_dict(cfg)
        for text in [f"{k}={json.dumps(v)}" for k, v in extra.items()] + list(args.overrides):
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
        if (trainer.run_dir / "config.yaml").is_file():
            print(f"\ninterrupted; continue with: cifarlab train --resume {trainer.run_dir}", file=sys.stderr)
        else:
            print("\ninterrupted before the run started; nothing was written", file=sys.stderr)
        return 130
    _print_summary(summary)
    if summary["status"] == "diverged":
        print(f"cifarlab: error: run diverged ({summary.get('error')}); see {trainer.run_dir}/summary.json. "
              "Lower optim.lr or enable optim.grad_clip.", file=sys.stderr)
        return 3
    return 0


def _tested_weights(summary: dict[str, Any]) -> str:
    """E.g. "last weights", "best weights, EMA, TTA flip": what exactly the test accuracy was measured on."""
    from cifarlab.engine.tta import tta_label

    parts = [f"{summary.get('test_weights', '-')} weights"]
    if summary.get("averaged"):
        parts.append(str(summary["averaged"]).upper())
    if summary.get("tta") not in (None, "none"):
        parts.append(f"TTA {tta_label(summary['tta'], summary.get('tta_confidence'))}")
    return ", ".join(parts)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from cifarlab.engine.metrics import percent

    def pct(v: Any) -> str:
        return percent(v) if isinstance(v, float) else "-"

    def num(v: Any, fmt: str = ".4f") -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    table = Table(title=f"run {summary['run']} ({summary['status']})", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("model", summary["model"]),
        ("parameters (trainable)", f"{summary['params']:,}"),
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


def add_config_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved config (same arguments as train)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--preset")
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE")
    for flag, key, kind, text in CONFIG_FLAGS:
        p.add_argument(flag, type=kind, help=f"{text} [{key}]".lstrip())


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from cifarlab.config import to_dict
    from cifarlab.models.registry import create

    cfg = _train_config(args)
    create(cfg.model.name, **cfg.model.options)  # what `train` refuses (model name, option names and values)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run directory or checkpoint on the test set")
    p.add_argument("target", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--weights", choices=["last", "best"], default=None,
                   help="which checkpoint of a run dir (default: the one the run was tested on, train.test_weights)")
    p.add_argument("--data-dir", help="where CIFAR-10 is (default: the run's data.dir)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


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
