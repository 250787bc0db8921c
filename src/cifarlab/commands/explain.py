"""``cifarlab explain``: argparse hook for the main CLI (``add_explain_parser`` + ``cmd_explain``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarlab.analysis.explain.settings import ExplainSettings, parse_parts

EPILOG = """\
examples:
  cifarlab explain runs/quick-20261123-101500                 # everything, quick-scale defaults (< 2 min on CPU)
  cifarlab explain RUN --parts gradcam,mistakes --images 16   # some parts (explain.json keeps the others)
  cifarlab explain RUN --parts gradcam --layer 6              # Grad-CAM on another layer (a module name)
  cifarlab explain RUN --parts gradcam --method ig            # integrated gradients instead
  cifarlab explain RUN --parts surface --grid 31 --batches 8 --include-bn-stats
  cifarlab explain RUN --parts interp --interpolate runs/other-seed/checkpoints/last.pt
  cifarlab explain --compare runs/vgg_a_cpu-... runs/vgg_a_bn_cpu-... --out runs/explain-vgg-bn
outputs go to RUN/explain/ (figures, NPZ arrays, structure.md/.csv, explain.json); `cifarlab report` shows them.
"""


def add_explain_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from cifarlab.commands.flags import add_flags

    p = subparsers.add_parser(
        "explain", help="what a trained run learned: filters, Grad-CAM, mistakes, loss surfaces, structure",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory made by `cifarlab train`")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="loss surfaces of two runs side by side on the same axes and scale (e.g. VGG-A vs "
                   "VGG-A+BN); the surface options below apply")
    p.add_argument("--out", help="output folder of --compare (default: explain-compare-A-vs-B next to RUN_A)")
    p.add_argument("--quiet", action="store_true", help="print only the output folder")
    add_flags(p, ExplainSettings)  # every setting, from the one dataclass
    return p


def settings_from_args(args: argparse.Namespace) -> ExplainSettings:
    from cifarlab.commands.flags import given
    from cifarlab.config import build_section

    values = given(args, ExplainSettings)
    if "parts" in values:
        values["parts"] = parse_parts(",".join(values["parts"]))
    return build_section(ExplainSettings, values).validate()


def cmd_explain(args: argparse.Namespace) -> int:
    from cifarlab.errors import ConfigError

    if (args.run_dir is None) == (args.compare is None):
        raise ConfigError("explain: give either RUN_DIR or --compare RUN_A RUN_B (not both, not neither)")
    if args.out is not None and args.compare is None:
        raise ConfigError("explain: --out is for --compare; a single run's outputs go to RUN_DIR/explain/")
    settings = settings_from_args(args)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    if args.compare is not None:
        from cifarlab.analysis.explain.compare import compare_runs, default_compare_dir

        out = args.out or default_compare_dir(Path(args.compare[0]), Path(args.compare[1]))
        log(f"explain --compare {args.compare[0]} {args.compare[1]} -> {out}")
        summary = compare_runs(args.compare[0], args.compare[1], settings, out, log=log)
        log(f"same scale {summary['display_range'][0]:.3f}..{summary['display_range'][1]:.3f}; "
            f"{summary['directions']}; {summary['total_s']:.1f}s")
        if args.quiet:
            print(out)
        return 0

    from cifarlab.analysis.explain.explain import explain_run

    log(f"explain {args.run_dir} -> {args.run_dir.rstrip('/')}/explain  (parts: {','.join(settings.parts)})")
    summary = explain_run(args.run_dir, settings, log=log)
    log(f"done in {summary['total_s']:.1f}s")
    if args.quiet:
        print(f"{args.run_dir.rstrip('/')}/explain")
    return 0


__all__ = ["add_explain_parser", "cmd_explain"]
