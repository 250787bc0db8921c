"""Command-line flags generated from a settings dataclass: one place defines a setting, its type, default,
choices and help; the flag ``--name-with-dashes`` follows. Values a user did not give stay None, so the
dataclass default applies and the config builder (``cifarlab.config.build_section``) checks what was given."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def _kind(tp: Any) -> Any:
    """int, float, str, bool or tuple for an annotation (Optional[...] unwrapped)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin is tuple:
        return tuple
    if args and origin is not None and origin is not tuple:
        return _kind(args[0])
    return tp


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field of ``cls`` (its metadata: help, group, choices, metavar); bools are switches."""
    hints, groups = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta, kind = f.metadata, _kind(hints[f.name])
        group = groups.get(meta.get("group")) or parser
        if meta.get("group") and meta["group"] not in groups:
            group = groups[meta["group"]] = parser.add_argument_group(meta["group"])
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        shown = "" if default is None or kind is bool else f" (default {default})"
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": meta.get("help", "") + shown}
        if kind is bool:
            kw["action"] = "store_true"
        else:
            kw.update(type=_split if kind is tuple else kind, choices=meta.get("choices"), metavar=meta.get("metavar"))
        group.add_argument("--" + f.name.replace("_", "-"), **kw)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of ``cls`` the user gave on the command line (switches only when on)."""
    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if v is not None and v is not False}


def add_spec_command(subparsers: argparse._SubParsersAction, name: str, help_text: str, epilog: str,
                     file_help: str, out_default: str, what: str, file_optional: bool = False
                     ) -> argparse.ArgumentParser:
    """A command that reads a spec file (sweep, tune): FILE, --out and --scale, with a formatted epilog.
    ``what`` names its folders in the help ("sweep folders")."""
    p = subparsers.add_parser(name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=epilog)
    p.add_argument("file", metavar="FILE", nargs="?" if file_optional else None, help=file_help)
    p.add_argument("--out", default=out_default, help=f"parent folder of {what} [default: {out_default}]")
    p.add_argument("--scale", help="named block of the file's `scales:` (e.g. quick, full) [default: its `scale:`]")
    return p
