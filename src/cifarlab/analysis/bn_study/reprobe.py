"""Recompute a run's probes from its saved probe points: are the numbers in probes.json / curvature.json
reproducible from what is on disk, and can a point be probed again with other settings?

A point (``callbacks.save_probe_point``) holds the weights and buffers, the optimizer state and the batch's
indices into the trainer's ``train_x``. The batch is rebuilt as ``augment.eval(train_x[indices])``, which is
what the training step saw only when the run does not augment or mix: such runs are refused. Noisy BN draws
fresh noise in every forward pass, so its points re-probe to other (equally valid) numbers, not the same ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cifarlab.analysis.bn_study.callbacks import POINTS_DIR, curvature_row, fig4_row
from cifarlab.analysis.bn_study.probes import probe_step
from cifarlab.config import RunConfig
from cifarlab.data import CifarArrays
from cifarlab.engine.build import build_augment, build_model, load_splits
from cifarlab.engine.checkpoint import load_checkpoint
from cifarlab.engine.environment import resolve_device
from cifarlab.engine.rundir import load_run_config
from cifarlab.errors import CheckpointError, ConfigError

FIG4_FIELDS = ("loss", "grad_norm", "losses", "grad_diffs", "betas", "rel_diffs", "loss_slopes")
CURVATURE_FIELDS = ("lambda_max", "gHg_over_gg", "Hg_over_g", "trace", "trace_se", "grad_norm", "loss")


def check_reprobable(cfg: RunConfig, run_dir: Path) -> None:
    """A point stores indices, not images: the batch is rebuilt exactly only without random augmentation."""
    a = cfg.augment
    on = [key for key, active in (("augment.crop_padding", a.crop_padding > 0), ("augment.flip", a.flip),
                                  ("augment.cutout", a.cutout > 0), ("augment.mixup_alpha", a.mixup_alpha > 0),
                                  ("augment.cutmix_alpha", a.cutmix_alpha > 0),
                                  ("train.grad_accum_steps", cfg.train.grad_accum_steps > 1)) if active]
    if on:
        raise ConfigError(f"cannot re-probe run '{run_dir}': its config has {', '.join(on)} on, so the probed "
                          f"batches cannot be rebuilt from the saved indices (probe runs must not augment)")


def rel_diff(a: Any, b: Any) -> float:
    """Max |a - b| / max(|a|, |b|) over matching numbers or lists (0 when both are 0; inf on a length mismatch)."""
    xs, ys = (a, b) if isinstance(a, list) else ([a], [b])
    if not isinstance(ys, list) or len(xs) != len(ys):
        return math.inf
    worst = 0.0
    for x, y in zip(xs, ys):
        if x is None or y is None:  # NaN/inf were written as null
            worst = max(worst, 0.0 if x is y else math.inf)
            continue
        scale = max(abs(x), abs(y))
        worst = max(worst, abs(x - y) / scale if scale > 0 else 0.0)
    return worst


def compare(saved: dict[str, Any], again: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    present = [f for f in fields if f in saved]
    diffs = {f: rel_diff(saved[f], again[f]) for f in present}
    return {"saved": {f: saved[f] for f in present}, "recomputed": {f: again[f] for f in present},
            "rel_diff": diffs, "max_rel_diff": max(diffs.values(), default=0.0)}


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def reprobe_point(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, step: int,
                  fig4: dict[str, Any] | None, curv: dict[str, Any] | None) -> dict[str, Any]:
    """Fig. 4 and curvature at one point, against the saved rows of that step (None: not probed there)."""
    out: dict[str, Any] = {"step": step, "fig4": None, "curvature": None}
    row = None if fig4 is None else next((r for r in fig4["rows"] if r["step"] == step), None)
    if row is not None:
        # g from loss_and_grads in training mode (probe_step computes it when no grads are given).
        again = fig4_row(probe_step(model, x, y, F.cross_entropy, row["etas"]))
        out["fig4"] = compare(row, again, FIG4_FIELDS)
    crow = None if curv is None else next((r for r in curv["rows"] if r["step"] == step), None)
    if crow is not None:
        again = curvature_row(model, x, y, step, power_iters=curv["power_iters"], power_tol=curv["power_tol"],
                              trace_probes=curv["trace_probes"], seed=curv["seed"])
        out["curvature"] = compare(crow, again, CURVATURE_FIELDS)
    parts = [p["max_rel_diff"] for p in (out["fig4"], out["curvature"]) if p is not None]
    out["max_rel_diff"] = max(parts, default=0.0)
    return out


def reprobe_run(run_dir: str | Path, data: CifarArrays | None = None,
                device: str | None = None) -> list[dict[str, Any]]:
    """Recompute the probes at every saved point of a run; per point the saved and recomputed numbers.

    ``data``: the ``CifarArrays`` the run was trained on when not CIFAR-10 (e.g. a synthetic set); ``device``:
    default the run's ``train.device``.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    check_reprobable(cfg, run_dir)
    points = sorted((run_dir / POINTS_DIR).glob("step_*.pt"))
    if not points:
        raise CheckpointError(f"run '{run_dir}' has no probe points ({POINTS_DIR}/): train it with the probes' "
                              f"save_points=True")
    dev = resolve_device(device or cfg.train.device)
    fig4, curv = _read(run_dir / "probes.json"), _read(run_dir / "curvature.json")
    model, augment = build_model(cfg, dev), build_augment(cfg)
    splits, _ = load_splits(cfg, data, progress=False)
    results = []
    for path in points:
        point = load_checkpoint(path, map_location=dev)
        model.load_state_dict(point["model"])
        model.train()  # the paper's protocol: BN normalises with the batch statistics
        idx = point["indices"].cpu()
        x, y = augment.eval(splits.train_x[idx].to(dev)), splits.train_y[idx].to(dev)
        results.append({"file": path.name, **reprobe_point(model, x, y, int(point["step"]), fig4, curv)})
    return results


__all__ = ["check_reprobable", "compare", "rel_diff", "reprobe_point", "reprobe_run"]
