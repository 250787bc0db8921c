"""Stratified, seeded train/validation split and subsets of CIFAR-10.

Each draw (validation, training subset, test subset) uses its own generator derived from ``seed``, so e.g.
the validation set depends only on ``(seed, val_size)``, whatever ``subset`` or ``test_subset`` is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from cifarlab.data.cifar10 import CLASSES, CifarArrays
from cifarlab.errors import DataError


@dataclass
class Splits:
    """Train/val/test tensors (uint8 images, int64 labels, CPU) and where train/val came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_index: torch.Tensor  # int64 indices into the full training set, ascending
    val_index: torch.Tensor  # int64 indices into the full training set, ascending


def _generator(seed: int, stream: str) -> torch.Generator:
    """An independent generator per purpose: hash (seed, stream) into a 63-bit torch seed."""
    digest = hashlib.sha256(f"cifarlab-split|{seed}|{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _allocate(k: int, counts: torch.Tensor) -> torch.Tensor:
    """Split ``k`` over classes proportionally to ``counts`` (largest remainder, ties to the lower class).

    For balanced classes this is ``k // C`` each, the remainder going to the first ``k % C`` classes.
    Never exceeds a class's count when ``k <= counts.sum()``.
    """
    total = int(counts.sum())
    exact = counts.to(torch.int64) * k  # quota_c = k * n_c / total, kept in integers to avoid rounding drift
    quotas = exact // total
    remainders = exact - quotas * total
    short = k - int(quotas.sum())
    if short:
        # Stable sort by descending remainder: ties keep class order, so the result is deterministic.
        order = torch.sort(-remainders, stable=True).indices
        quotas[order[:short]] += 1
    return quotas


def _stratified_pick(labels: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``k`` positions of ``labels`` stratified by class; return (picked, rest), both ascending."""
    n = labels.numel()
    perm = torch.randperm(n, generator=gen)
    # Group a random permutation by class (stable sort keeps it random within a class): the first quota_c
    # positions of each class group are a uniform draw from that class.
    grouped = perm[torch.sort(labels[perm], stable=True).indices]
    counts = torch.bincount(labels, minlength=len(CLASSES))
    quotas = _allocate(k, counts)
    starts = torch.cumsum(counts, 0) - counts
    picked, rest = [], []
    for c in range(len(counts)):  # a loop over classes, not images
        s, q, n_c = int(starts[c]), int(quotas[c]), int(counts[c])
        picked.append(grouped[s : s + q])
        rest.append(grouped[s + q : s + n_c])
    return torch.sort(torch.cat(picked)).values, torch.sort(torch.cat(rest)).values


def _check_size(name: str, value: int | None, low: int, high: int, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DataError(f"{name}={value!r} is impossible: expected an integer in {low}..{high} ({what})")


def make_splits(
    data: CifarArrays,
    val_size: int = 5000,
    subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
) -> Splits:
    """Carve a stratified validation set of ``val_size`` images from the training set, optionally keep only a
    stratified ``subset`` of the remaining training images and a stratified ``test_subset`` of the test set.

    Same ``seed`` -> identical splits; train and val are disjoint. Raises DataError for impossible sizes.
    """
    n_train, n_test = data.train_y.numel(), data.test_y.numel()
    _check_size("val_size", val_size, 0, n_train - 1, f"the training set has {n_train} images")
    _check_size(
        "subset", subset, 1, n_train - val_size, f"{n_train} training images minus val_size={val_size}"
    )
    _check_size("test_subset", test_subset, 1, n_test, f"the test set has {n_test} images")

    val_index, rest = _stratified_pick(data.train_y, val_size, _generator(seed, "val"))
    if subset is None:
        train_index = rest
    else:
        chosen, _ = _stratified_pick(data.train_y[rest], subset, _generator(seed, "subset"))
        train_index = rest[chosen]
    if test_subset is None:
        test_x, test_y = data.test_x, data.test_y
    else:
        test_index, _ = _stratified_pick(data.test_y, test_subset, _generator(seed, "test"))
        test_x, test_y = data.test_x[test_index], data.test_y[test_index]

    return Splits(
        train_x=data.train_x[train_index],
        train_y=data.train_y[train_index],
        val_x=data.train_x[val_index],
        val_y=data.train_y[val_index],
        test_x=test_x,
        test_y=test_y,
        train_index=train_index,
        val_index=val_index,
    )


__all__ = ["Splits", "make_splits"]
