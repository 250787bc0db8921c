"""``cifarlab eval``: a run directory or checkpoint on the test set."""

from __future__ import annotations

import argparse
import json


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run directory or checkpoint on the test set")
    p.add_argument("target", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--weights", choices=["last", "best"], default="last", help="which checkpoint of a run dir")
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
