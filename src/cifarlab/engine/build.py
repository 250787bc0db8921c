"""Everything a run is built from, out of a ``RunConfig``: the one place that reads config sections for that.

``build_model``, ``build_augment``, ``autocast_context`` and ``load_splits`` serve the trainer, ``cifarlab
eval``, explain and bench alike; ``build_components`` assembles what the training loop needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cifarlab.config import RunConfig
from cifarlab.data import BatchAugment, CifarArrays, Splits, load_cifar10, make_splits
from cifarlab.engine.averaging import EMA, SWA
from cifarlab.engine.environment import cpu_has_native_bf16
from cifarlab.engine.losses import build_loss
from cifarlab.engine.mixing import BatchMixer
from cifarlab.engine.optim import build_optimizer, build_regularizer
from cifarlab.engine.schedules import LRSchedule
from cifarlab.errors import ConfigError
from cifarlab.models import create

HALF_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose state_dict we save (torch.compile wraps the model)."""
    return getattr(model, "_orig_mod", model)


def seed_for(seed: int, epoch: int) -> int:
    # Distinct, reproducible streams per (seed, epoch); large odd multiplier avoids collisions between seeds.
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2**63 - 1)


def set_determinism(cfg: RunConfig, device: torch.device) -> None:
    torch.manual_seed(cfg.train.seed)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        torch.backends.cudnn.deterministic = cfg.train.deterministic


def build_model(cfg: RunConfig, device: torch.device) -> nn.Module:
    model = create(cfg.model.name, **cfg.model.options)
    # channels_last lets cuDNN/oneDNN pick NHWC kernels (faster convs on GPUs with tensor cores and on CPU).
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    return model.to(device=device, memory_format=memory_format)


def build_augment(cfg: RunConfig) -> BatchAugment:
    extra = {}
    if cfg.data.normalize == "half":
        extra = {"mean": HALF_NORM[0], "std": HALF_NORM[1]}
    a = cfg.augment
    return BatchAugment(
        crop_padding=a.crop_padding, pad_mode=a.pad_mode, flip=a.flip, cutout=a.cutout,
        channels_last=cfg.train.channels_last, **extra,
    )


def resolve_amp(mode: str, device: torch.device) -> str:
    """``auto``: bf16 autocast on CUDA and on CPUs with bf16 in hardware (AVX512_BF16 / AMX), where a training
    step is ~1.5-2x faster than fp32 (docs/benchmarks.md, `cifarlab bench`); fp32 elsewhere: emulated bf16 on an
    AVX2-only CPU is slower than fp32."""
    if mode != "auto":
        return mode
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "off"


def autocast_context(cfg: RunConfig, device: torch.device) -> Callable[[], Any]:
    """The forward pass's precision. Autocast leaves weights, BN statistics, the loss and the optimizer state fp32."""
    mode = resolve_amp(cfg.train.amp, device)
    if mode == "off":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def load_splits(cfg: RunConfig, data: CifarArrays | None = None, progress: bool | None = None) -> tuple[Splits, str]:
    """The run's train/val/test splits (``data`` given: split that instead of loading CIFAR-10) and its source."""
    d = cfg.data
    data = data or load_cifar10(d.dir, download=d.download, progress=progress)
    splits = make_splits(data, val_size=d.val_size, subset=d.subset, test_subset=d.test_subset, seed=d.split_seed)
    return splits, data.source


def steps_per_epoch(cfg: RunConfig, train_images: int) -> int:
    """Optimizer steps per epoch; the last partial batch is dropped (constant steps/epoch, no size-1 BN batches)."""
    bs, accum = cfg.train.batch_size, cfg.train.grad_accum_steps
    if accum > 1 and train_images < bs * accum:
        raise ConfigError(f"config key 'train.grad_accum_steps': got {accum}, but batch_size x grad_accum_steps "
                          f"= {bs * accum} exceeds the {train_images} training images")
    return max(1, train_images // (bs * accum))


def planned_epochs(cfg: RunConfig, per_epoch: int) -> int:
    """``train.epochs``, or the epochs ``train.max_steps`` needs (the last one partial)."""
    steps = cfg.train.max_steps
    return cfg.train.epochs if steps is None else -(-steps // per_epoch)


@dataclass
class Components:
    """What the training loop is made of; built once per run, in this order, right after seeding."""

    loss_fn: nn.Module
    regularizer: Callable[[], torch.Tensor] | None
    mixer: BatchMixer
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    ema: EMA | None
    swa: SWA | None
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]


def build_components(cfg: RunConfig, model: nn.Module, device: torch.device, per_epoch: int) -> Components:
    t, a = cfg.train, cfg.augment
    epochs = planned_epochs(cfg, per_epoch)
    optimizer = build_optimizer(model, cfg.optim, total_steps=per_epoch * epochs)
    # Averaged copies start from the initial weights (before torch.compile wraps the model).
    return Components(
        loss_fn=build_loss(cfg.loss).to(device),
        regularizer=build_regularizer(model, cfg.optim),
        mixer=BatchMixer(a.mixup_alpha, a.cutmix_alpha, a.mix_prob),
        optimizer=optimizer,
        schedule=LRSchedule(optimizer, cfg.sched, epochs, per_epoch, swa_start_epoch=t.swa_start_epoch,
                            swa_lr=t.swa_lr),
        ema=EMA(unwrap(model), t.ema_decay) if t.ema_decay > 0 else None,
        swa=SWA(unwrap(model)) if t.swa_start_epoch is not None else None,
        scaler=torch.amp.GradScaler("cuda", enabled=t.amp == "fp16" and device.type == "cuda"),
        autocast=autocast_context(cfg, device),
    )


__all__ = ["Components", "autocast_context", "build_augment", "build_components", "build_model", "load_splits",
           "planned_epochs", "resolve_amp", "seed_for", "set_determinism", "steps_per_epoch", "unwrap"]
