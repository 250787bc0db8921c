"""``cifarlab models`` and ``cifarlab presets``: what can be trained."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_models_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list models with parameters and MACs, or one model's layer table")
    p.add_argument("names", nargs="*", help="only these models")
    p.add_argument("--summary", metavar="NAME", help="print the layer table (output shapes, params) of NAME")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option, e.g. "
                   "width_mult=0.5")


def add_presets_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("presets", help="list shipped presets")


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
    from tqdm.auto import tqdm

    # A bar on a terminal (stderr) while the models are measured; the table comes once all are.
    for name in tqdm(names, desc="measuring models", unit="model", leave=False, disable=None, file=sys.stderr):
        info = model_info(name, **options)
        table.add_row(name, f"{info['params']:,}", f"{info['macs'] / 1e6:,.1f} M", info["description"])
    Console(width=max(120, Console().width)).print(table)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from cifarlab.config import list_presets, preset_dict

    for name in list_presets():
        about = preset_dict(name).get("description", "")
        print(f"{name:<16} {about}")
    from cifarlab.commands.experiments import print_experiment_presets

    print("\nexperiment presets (cifarlab sweep NAME):")
    print_experiment_presets()
    return 0
