"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cifar_archive() -> Path:
    """Path of the real CIFAR-10 archive (read-only; tests must never write next to it).

    $CIFARLAB_TEST_ARCHIVE if set, else <repo>/../shared/datasets/cifar-10-python.tar.gz. Missing: a failure
    on CI (where the data must be there), a skip elsewhere.
    """
    env = os.environ.get("CIFARLAB_TEST_ARCHIVE")
    path = Path(env) if env else REPO.parent / "shared" / "datasets" / "cifar-10-python.tar.gz"
    if not path.is_file():
        message = f"CIFAR-10 archive not found at {path} (set CIFARLAB_TEST_ARCHIVE)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
