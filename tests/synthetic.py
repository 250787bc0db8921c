"""Synthetic, learnable CIFAR-shaped data and a tiny training config, shared by the engine-level tests."""

from __future__ import annotations

import torch

from cifarlab.config import RunConfig, load_config
from cifarlab.data import CifarArrays


def synthetic_cifar(n_train: int = 600, n_test: int = 200, seed: int = 0) -> CifarArrays:
    """Class k = a square of class-specific colour at a random place on noise: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[250, 30, 30], [30, 250, 30], [30, 30, 250], [250, 250, 30], [250, 30, 250],
                            [30, 250, 250], [250, 250, 250], [140, 30, 30], [30, 140, 30], [30, 30, 140]],
                           dtype=torch.uint8)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        x = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        pos = torch.randint(0, 22, (n, 2), generator=g)
        for i in range(n):  # test data only: per-image Python is fine here
            r, c = pos[i].tolist()
            x[i, :, r : r + 10, c : c + 10] = palette[y[i]].view(3, 1, 1)
        return x, y.long()

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    return CifarArrays(train_x, train_y, test_x, test_y, source="synthetic")


TINY = [
    "model.name=quick_cnn",
    "model.options.widths=[8, 16, 16]",
    "data.val_size=100",
    "train.batch_size=50",
    "train.eval_batch_size=100",
    "optim.lr=0.05",
    "sched.name=cosine",
    "augment.crop_padding=2",
    # fp32 on every machine: the engine tests compare exact identities (accumulation = one batch, EMA, resume);
    # bf16 autocast, which train.amp=auto picks on some CPUs, is tested in test_precision.py.
    "train.amp=off",
]


def cfg_with(*overrides: str) -> RunConfig:
    return load_config(overrides=[*TINY, *overrides])


def train_interrupted_then_resumed(cfg: RunConfig, run_dir, data: CifarArrays, after_epoch: int = 2) -> dict:
    """Train until a KeyboardInterrupt at the end of ``after_epoch``, then ``--resume``; the resumed summary."""
    import pytest

    from cifarlab.engine.callbacks import EpochEndFunction
    from cifarlab.engine.trainer import train

    def interrupt(epoch: int, row: dict) -> None:
        if epoch == after_epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir, data=data, progress=False, callbacks=[EpochEndFunction(interrupt)])
    assert not (run_dir / "summary.json").exists()
    return train(cfg, run_dir, resume=True, data=data, progress=False)
