"""Checkpoints: ``torch.save`` to memory, then an atomic write (see :mod:`cifarlab.io`); loaded weights-only."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from cifarlab.errors import CheckpointError
from cifarlab.io import atomic_write_bytes

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` to memory, then an atomic write (the state must be loadable with weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint can hold tensors and plain values, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        text = str(exc)
        unsafe = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
        if unsafe:
            raise CheckpointError(f"checkpoint '{path}' was refused as unsafe: it references the Python object "
                                  f"'{unsafe.group(1)}', which a weights-only load never runs (cifarlab checkpoints "
                                  "hold only tensors and plain values); do not load it") from None
        if "Weights only load failed" in text:  # torch's advice to turn the protection off is not repeated
            reason = "the weights-only unpickler cannot read it"
        else:
            reason = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint '{path}' is unreadable or not a cifarlab checkpoint ({reason})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint '{path}' is not a cifarlab checkpoint (no 'model'/'config' entries)")
    return state
