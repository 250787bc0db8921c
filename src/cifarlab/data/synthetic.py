"""Random CIFAR-shaped images with a learnable class signal: smoke runs and tests without the archive."""

from __future__ import annotations

import torch

from cifarlab.data.cifar10 import CifarArrays


def synthetic_cifar(n: int, seed: int = 0) -> CifarArrays:
    """``n`` training + n//2 test random 32x32 images whose class shifts the mean colour (learnable, tiny)."""
    gen = torch.Generator().manual_seed(seed)

    def make(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(count) % 10
        y = y[torch.randperm(count, generator=gen)]
        base = torch.randint(0, 160, (count, 3, 32, 32), generator=gen)
        tint = torch.stack([(y * 9) % 96, (y * 37) % 96, (y * 71) % 96], dim=1).view(count, 3, 1, 1)
        return (base + tint).clamp(0, 255).to(torch.uint8), y.to(torch.int64)

    tx, ty = make(n)
    sx, sy = make(max(10, n // 2))
    return CifarArrays(train_x=tx, train_y=ty, test_x=sx, test_y=sy, source=f"synthetic ({n} images)")
