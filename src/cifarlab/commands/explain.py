"""``cifarlab explain``: argparse hook for the main CLI (``add_explain_parser`` + ``cmd_explain``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cifarlab.analysis.explain.settings import PARTS, ExplainSettings, parse_parts

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
    d = ExplainSettings()
    p = subparsers.add_parser(
        "explain", help="what a trained run learned: filters, Grad-CAM, mistakes, loss surfaces, structure",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory made by `cifarlab train`")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="loss surfaces of two runs side by side on the same axes and scale (e.g. VGG-A vs "
                   "VGG-A+BN); the surface options below apply")
    p.add_argument("--out", help="output folder of --compare (default: explain-compare-A-vs-B next to RUN_A)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)} "
                   "(default: all)")
    p.add_argument("--checkpoint", choices=["last", "best"], default=d.checkpoint,
                   help="which checkpoint of the run (default last; its EMA/SWA average when the run kept one)")
    g = p.add_argument_group("attribution and feature maps")
    g.add_argument("--images", type=int, default=d.images, help=f"test images to explain (default {d.images})")
    g.add_argument("--method", choices=["gradcam", "saliency", "ig"], default=d.method,
                   help="Captum LayerGradCam, Saliency or IntegratedGradients (default gradcam)")
    g.add_argument("--layer", help="Grad-CAM target layer, a module name such as features.12 (default: the last "
                   "feature map at the last conv's resolution)")
    g.add_argument("--target", choices=["pred", "true"], default=d.target, help="explain the predicted (default) "
                   "or the true class")
    g.add_argument("--ig-steps", type=int, default=d.ig_steps, help=f"integrated-gradients steps ({d.ig_steps})")
    g.add_argument("--feature-layers", help="comma-separated layers for feature maps (default: the end of each "
                   "resolution stage)")
    g.add_argument("--feature-images", type=int, default=d.feature_images,
                   help=f"test images whose feature maps are shown (default {d.feature_images})")
    g.add_argument("--mistakes", type=int, default=d.mistakes,
                   help=f"most confident mistakes in the gallery (default {d.mistakes})")
    g = p.add_argument_group("loss surface (Li et al. 2018) and interpolation")
    g.add_argument("--grid", type=int, default=d.grid, help=f"2-D grid points per axis, odd (default {d.grid})")
    g.add_argument("--line", type=int, default=d.line, help=f"1-D line points, odd (default {d.line})")
    g.add_argument("--span", type=float, default=d.span, help=f"coordinates in [-span, span] (default {d.span:g})")
    g.add_argument("--batches", type=int, default=d.batches,
                   help=f"training batches each loss is averaged over (default {d.batches})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    g.add_argument("--include-bn-stats", action="store_true",
                   help="also move BN running mean/var along the directions (default: weights only)")
    g.add_argument("--interpolate", default=d.interpolate, metavar="init|CKPT",
                   help="start of the interpolation to the trained weights: init (the run's seeded initial "
                   "weights) or a checkpoint file / run directory (default init)")
    g.add_argument("--interp-points", type=int, default=d.interp_points,
                   help=f"interpolation points on [0, 1], continued by 25 %% on both sides (default {d.interp_points})")
    g.add_argument("--zmax", type=float, help="clip drawn losses at this value (default min(10, max))")
    p.add_argument("--seed", type=int, default=d.seed, help="directions, test images, batches (default 0)")
    p.add_argument("--data-dir", help="where CIFAR-10 is (default: the run's data.dir)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--quiet", action="store_true", help="print only the output folder")
    return p


def settings_from_args(args: argparse.Namespace) -> ExplainSettings:
    features = None
    if args.feature_layers is not None:
        features = tuple(n.strip() for n in args.feature_layers.split(",") if n.strip())
    return ExplainSettings(
        parts=parse_parts(args.parts), checkpoint=args.checkpoint, images=args.images, method=args.method,
        layer=args.layer, target=args.target, ig_steps=args.ig_steps, feature_layers=features,
        feature_images=args.feature_images, mistakes=args.mistakes, grid=args.grid, line=args.line, span=args.span,
        batches=args.batches, batch_size=args.batch_size, include_bn_stats=args.include_bn_stats,
        interpolate=args.interpolate, interp_points=args.interp_points, zmax=args.zmax, seed=args.seed,
        data_dir=args.data_dir, device=args.device,
    ).validate()


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
