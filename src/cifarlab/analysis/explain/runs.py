"""A trained run as ``cifarlab explain`` sees it: config, model with its evaluation weights, data splits, batches.

Everything is rebuilt with the engine's own helpers (``resolve_checkpoint``, ``load_checkpoint``,
``config_from_dict``, ``build_model``, ``build_augment``, ``make_splits``), exactly as ``cifarlab eval`` does, so
the model explained is the model the run tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarlab.config import RunConfig, config_from_dict
from cifarlab.data import BatchAugment, CifarArrays, Splits, load_cifar10, make_splits
from cifarlab.engine.build import build_augment, build_model
from cifarlab.engine.checkpoint import load_checkpoint
from cifarlab.engine.environment import resolve_device
from cifarlab.engine.evaluate import averaged_state, resolve_checkpoint
from cifarlab.errors import CheckpointError, CifarlabError, ConfigError


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: RunConfig
    model: nn.Module  # eval mode, the weights the run evaluates (EMA/SWA average when it kept one)
    checkpoint: Path
    epoch: int
    averaged: bool  # True: the checkpoint's averaged (EMA/SWA) weights was loaded instead of the raw weights
    device: torch.device
    augment: BatchAugment

    @property
    def name(self) -> str:
        return self.run_dir.name

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.run_dir), "model": self.cfg.model.name, "model_options": dict(self.cfg.model.options),
                "checkpoint": str(self.checkpoint), "epoch": self.epoch, "averaged": self.averaged,
                "device": str(self.device)}


def check_run_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.exists():
        raise CheckpointError(f"run directory '{path}' does not exist")
    if not path.is_dir():
        raise CheckpointError(f"'{path}' is not a run directory (expected a folder made by `cifarlab train`)")
    if not (path / "config.yaml").is_file() and not (path / "checkpoints").is_dir():
        raise CheckpointError(f"'{path}' is not a run directory (no config.yaml or checkpoints/ in it)")
    return path


def device_from(name: str | None) -> torch.device:
    """``--device`` -> torch.device; a malformed name is a user error (torch raises RuntimeError)."""
    try:
        return resolve_device(name or "auto")
    except RuntimeError:
        raise ConfigError(f"--device={name!r} is unknown; expected auto, cpu, cuda, cuda:N or mps") from None


def eval_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a run evaluates: the EMA/SWA average when it kept one, else the raw weights (as eval does)."""
    averaged = averaged_state(state)
    return averaged if averaged is not None else state["model"]


def load_run(run_dir: str | Path, checkpoint: str = "last", device: str | torch.device | None = None) -> LoadedRun:
    """Rebuild the model of ``run_dir`` from its checkpoint's config and load the evaluated weights (eval mode)."""
    path = check_run_dir(run_dir)
    dev = device if isinstance(device, torch.device) else device_from(device)
    ckpt = resolve_checkpoint(path, checkpoint)
    state = load_checkpoint(ckpt, map_location=dev)
    cfg = config_from_dict(state["config"])
    model = build_model(cfg, dev)
    model.load_state_dict(eval_weights(state))
    model.eval()
    return LoadedRun(path, cfg, model, ckpt, int(state.get("epoch", 0)), averaged_state(state) is not None, dev,
                     build_augment(cfg))


def initial_state(cfg: RunConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """The run's initial weights, rebuilt deterministically: the trainer seeds the global RNG with
    ``train.seed`` and builds the model first thing, so the same two steps give the same tensors (runs do not
    save an init checkpoint). The caller's RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):  # models are created on the CPU, then moved: only the CPU RNG draws
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, device)
    return {k: v.detach() for k, v in model.state_dict().items()}


def load_endpoint(spec: str, run: LoadedRun) -> tuple[dict[str, torch.Tensor], str]:
    """Other end of the interpolation: ``"init"`` or a checkpoint file / run directory (its ``last`` weights).

    Returns (state dict on the run's device, a description). Raises CifarlabError when the architectures differ.
    """
    if spec == "init":
        return initial_state(run.cfg, run.device), (f"initial weights rebuilt from train.seed={run.cfg.train.seed} "
                                                    "(the run saves no init checkpoint; same seed, same init)")
    target = Path(spec)
    if not target.exists():
        raise CheckpointError(f"--interpolate: '{spec}' is neither 'init' nor an existing checkpoint or run directory")
    ckpt = resolve_checkpoint(target, "last")
    state = eval_weights(load_checkpoint(ckpt, map_location=run.device))
    mine = run.model.state_dict()
    mismatch = [k for k in mine if k not in state or tuple(state[k].shape) != tuple(mine[k].shape)]
    mismatch += [k for k in state if k not in mine]
    if mismatch:
        raise CifarlabError(f"--interpolate: checkpoint '{ckpt}' has another architecture than run '{run.name}' "
                            f"(first differing entry: {mismatch[0]}); expected a checkpoint of {run.cfg.model.name} "
                            f"with the same options")
    return {k: state[k].to(run.device) for k in mine}, f"checkpoint {ckpt}"


def load_splits(cfg: RunConfig, data_dir: str | None = None, data: CifarArrays | None = None) -> Splits:
    """The run's own train/val/test splits (same sizes and split seed as in training)."""
    if data is None:
        data = load_cifar10(data_dir if data_dir is not None else cfg.data.dir, download=cfg.data.download)
    d = cfg.data
    return make_splits(data, val_size=d.val_size, subset=d.subset, test_subset=d.test_subset, seed=d.split_seed)


def sample_indices(n: int, k: int, seed: int, stream: int = 0) -> torch.Tensor:
    """``min(k, n)`` distinct indices in 0..n-1 drawn with a seeded generator (reproducible, independent of the
    global RNG)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + stream)
    return torch.randperm(n, generator=gen)[: min(k, n)]


def training_batches(splits: Splits, augment: BatchAugment, batches: int, batch_size: int, seed: int,
                     device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` fixed batches of ``batch_size`` TRAINING images (seeded draw, no augmentation, normalised as
    in evaluation). A training split smaller than asked gives fewer (or one smaller) batches."""
    n = len(splits.train_y)
    if n == 0:
        raise CifarlabError("the run's training split is empty: no batches for the loss surface")
    idx = sample_indices(n, batches * batch_size, seed, stream=1)
    out = []
    for start in range(0, len(idx), batch_size):
        part = idx[start : start + batch_size]
        out.append((augment.eval(splits.train_x[part].to(device)), splits.train_y[part].to(device)))
    return out


__all__ = ["LoadedRun", "check_run_dir", "device_from", "eval_weights", "initial_state", "load_endpoint", "load_run",
           "load_splits", "sample_indices", "training_batches"]
