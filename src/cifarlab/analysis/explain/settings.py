"""Options of ``cifarlab explain``: one typed dataclass, validated once, with quick-scale defaults.

The defaults are sized so that explaining the quick preset's model (``quick_cnn``) takes under 2 minutes on a
2-core CPU (measured numbers in docs/explain.md); every value is a CLI flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cifarlab.errors import ConfigError

PARTS: tuple[str, ...] = ("structure", "filters", "gradcam", "mistakes", "surface", "interp")
METHODS: tuple[str, ...] = ("gradcam", "saliency", "ig")
TARGETS: tuple[str, ...] = ("pred", "true")
CHECKPOINTS: tuple[str, ...] = ("last", "best")


def opt(default: Any, help: str, group: str = "", choices: tuple[str, ...] | None = None,
        metavar: str | None = None) -> Any:
    """A setting with what its command-line flag needs (the flags are generated from these fields)."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "metavar": metavar})


ATTR = "attribution and feature maps"
SURF = "loss surface (Li et al. 2018) and interpolation"


@dataclass
class ExplainSettings:
    """Every setting is a flag of `cifarlab explain` (``--name-with-dashes``), generated from this class."""

    parts: tuple[str, ...] = opt(PARTS, f"comma-separated subset of {','.join(PARTS)}; the parts not asked for "
                                 "stay as they are in explain.json")
    checkpoint: str = opt("last", "which checkpoint of the run (its EMA/SWA average when the run kept one)",
                          choices=CHECKPOINTS)
    images: int = opt(8, "test images with an attribution overlay", ATTR)
    method: str = opt("gradcam", "Captum LayerGradCam, Saliency or IntegratedGradients", ATTR, METHODS)
    layer: str | None = opt(None, "Grad-CAM target layer, a module name such as features.12 (default: the last "
                            "feature map at the last conv's resolution)", ATTR)
    target: str = opt("pred", "explain the predicted or the true class", ATTR, TARGETS)
    ig_steps: int = opt(32, "integrated gradients: Riemann steps from the baseline (the data set's mean image)", ATTR)
    feature_layers: tuple[str, ...] | None = opt(None, "comma-separated layers for feature maps (default: the end "
                                                 "of each resolution stage)", ATTR)
    feature_images: int = opt(3, "test images whose feature maps are shown", ATTR)
    mistakes: int = opt(16, "most confident mistakes in the gallery", ATTR)
    grid: int = opt(11, "2-D grid points per axis, odd (the trained weights are the centre)", SURF)
    line: int = opt(21, "1-D line points, odd", SURF)
    span: float = opt(1.0, "coordinates in [-span, span], in units of the filter-normalised direction", SURF)
    batches: int = opt(2, "training batches each surface/interpolation loss is averaged over", SURF)
    batch_size: int = opt(256, "images per such batch", SURF)
    include_bn_stats: bool = opt(False, "also move BN running mean/var along the directions", SURF)
    interpolate: str = opt("init", "start of the interpolation to the trained weights: init (the run's seeded "
                           "initial weights) or a checkpoint file / run directory", SURF, metavar="init|CKPT")
    interp_points: int = opt(11, "interpolation points on [0, 1], continued by 25 %% on both sides", SURF)
    zmax: float | None = opt(None, "clip drawn losses at this value (default min(10, max)); the NPZ keeps all", SURF)
    seed: int = opt(0, "directions, test images and training batches")
    data_dir: str | None = opt(None, "where CIFAR-10 is (default: the run's data.dir)")
    device: str | None = opt(None, "auto, cpu, cuda, cuda:N (default auto)")

    def validate(self) -> ExplainSettings:
        """Raise ConfigError naming the first impossible value; return self."""
        bad = [p for p in self.parts if p not in PARTS]
        if bad or not self.parts:
            shown = ", ".join(repr(b) for b in bad) if bad else "nothing"
            raise ConfigError(f"--parts: unknown part {shown}; expected a comma-separated subset of {','.join(PARTS)}")
        _choice("--checkpoint", self.checkpoint, CHECKPOINTS)
        _choice("--method", self.method, METHODS)
        _choice("--target", self.target, TARGETS)
        _positive("--images", self.images)
        _positive("--ig-steps", self.ig_steps)
        _positive("--feature-images", self.feature_images)
        _positive("--mistakes", self.mistakes)
        _positive("--batches", self.batches)
        _positive("--batch-size", self.batch_size)
        for flag, n in (("--grid", self.grid), ("--line", self.line)):
            _positive(flag, n)
            if n < 3 or n % 2 == 0:
                raise ConfigError(f"{flag}={n} is impossible: expected an odd integer >= 3 (the trained weights "
                                  "are the centre point)")
        if self.interp_points < 2:
            raise ConfigError(f"--interp-points={self.interp_points} is impossible: expected an integer >= 2")
        if not self.span > 0:
            raise ConfigError(f"--span={self.span} is impossible: expected a positive number")
        if self.zmax is not None and not self.zmax > 0:
            raise ConfigError(f"--zmax={self.zmax} is impossible: expected a positive loss value")
        if not self.interpolate:
            raise ConfigError("--interpolate: expected 'init' or a checkpoint / run directory")
        if self.feature_layers is not None and not self.feature_layers:
            raise ConfigError("--feature-layers: expected a comma-separated list of module names")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parts"] = list(self.parts)
        d["feature_layers"] = None if self.feature_layers is None else list(self.feature_layers)
        return d


def _choice(flag: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{flag}={value!r} is unknown; expected one of {', '.join(valid)}")


def _positive(flag: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{flag}={value!r} is impossible: expected a positive integer")


def parse_parts(text: str) -> tuple[str, ...]:
    """``"filters, gradcam"`` -> ("filters", "gradcam") in the canonical order; unknown names are kept (validate
    reports them)."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    known = [p for p in PARTS if p in names]
    return tuple(known + [p for p in names if p not in PARTS])


__all__ = ["CHECKPOINTS", "METHODS", "PARTS", "TARGETS", "ExplainSettings", "parse_parts"]
