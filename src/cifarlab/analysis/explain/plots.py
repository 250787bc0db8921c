"""Figure and file helpers of ``cifarlab explain``: matplotlib's Agg canvas used directly (no pyplot, no global
backend switch, as report/figures.py), every file written atomically (temporary file, then ``os.replace``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab.io import atomic_write_bytes
from cifarlab.plotting import new_figure, save


def save_png(fig: Any, path: str | Path, tight: bool = True) -> Path:
    return save(fig, path, tight)


def save_npz(path: str | Path, **arrays: Any) -> Path:
    """``np.savez`` into memory, then an atomic write (``np.load`` reads it back with ``allow_pickle=False``)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def to_hwc(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, 3, H, W) images (the data set's own pixels, not the normalised input) -> (N, H, W, 3) uint8."""
    return images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()


def unit_range(a: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    """Min-max scale to [0, 1] over ``axis`` (all values when None); a constant block becomes 0.5."""
    a = np.asarray(a, dtype=np.float64)
    lo = a.min(axis=axis, keepdims=True)
    hi = a.max(axis=axis, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1.0), 0.5)


def mosaic(tiles: np.ndarray, cols: int, pad: int = 1, fill: float = np.nan) -> np.ndarray:
    """(N, H, W[, C]) tiles -> one (rows*(H+pad)-pad, cols*(W+pad)-pad[, C]) image, row-major, ``fill`` between
    (NaN: drawn in the colour map's "bad" colour, white with ``feature_cmap``)."""
    n, h, w = tiles.shape[:3]
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, *tiles.shape[3:]), fill, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = tiles[i]
    return out


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a log line; "-" for a missing (None) value."""
    return "-" if value is None else f"{value:.{digits}f}"


def feature_cmap(name: str = "viridis") -> Any:
    """A colour map whose NaN ("bad") colour is white: the gaps of a ``mosaic``."""
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="white")


__all__ = ["feature_cmap", "fmt", "mosaic", "new_figure", "save_npz", "save_png", "to_hwc", "unit_range"]
