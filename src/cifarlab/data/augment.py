"""Batched augmentation and normalisation of uint8 image batches, as tensor ops on the batch's device.

This is the hot loop of training, so nothing here loops over images in Python:

* random crop (after reflect/zero padding) and horizontal flip are ONE gather on the uint8 batch: each output
  pixel's source row/column is computed with per-sample index arithmetic (padding is folded into the index
  math, so no padded copy is made; a flip just reverses the column index of the flipped samples);
* normalisation is an exact uint8 -> float32 copy plus one fused multiply-add with ``1/(255*std)`` and
  ``-mean/std`` folded together, in the requested memory format (channels_last without a float transpose);
* cutout is a broadcast mask applied after normalisation (so the square becomes the data-set mean).

All randomness comes from the caller's ``torch.Generator`` (on the batch's device), so a run is reproducible
and resumable by saving the generator state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cifarlab.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from cifarlab.errors import ConfigError

PAD_MODES = ("reflect", "zeros")


def _fill_rect_(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, value: float, outside: bool = False
) -> None:
    """In place: ``x[b, :, i, j] = value`` where ``rows[b, i] & cols[b, j]`` (where NOT, if ``outside``).

    ``rows`` (B, H) and ``cols`` (B, W) are bool. Masks are laid out like x's memory so fills run over long
    contiguous rows: a (B, 1, H, W) mask broadcast over an NHWC tensor's innermost C=3 is much slower.
    """
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        x = x.permute(0, 2, 3, 1).view(b, 1, h, w * c)  # rows of W*C values, same memory
        cols = cols.repeat_interleave(c, dim=1)  # one flag per value of an NHWC row
    r, q = rows.view(b, 1, h, 1), cols.view(b, 1, 1, -1)
    if outside:
        # NOT(row AND col) = NOT row OR NOT col: two broadcast fills, no full-size mask.
        x.masked_fill_(~r, value)
        x.masked_fill_(~q, value)
    else:
        x.masked_fill_(r & q, value)


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected an image batch of shape (B, C, H, W), got shape {tuple(x.shape)}")


def _source_index(
    pos: torch.Tensor, offset: torch.Tensor, padding: int, size: int, pad_mode: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Source coordinate of output coordinate ``pos`` (B, L) for crops at ``offset`` (B,) in a padded image.

    Returns (index clamped into 0..size-1, validity mask or None). Reflect mirrors without repeating the edge
    (like ``F.pad(mode="reflect")``); zeros marks out-of-image positions invalid so the caller zeroes them.
    """
    src = pos + (offset - padding).unsqueeze(1)
    if padding == 0:
        return src, None
    if pad_mode == "reflect":
        src = src.abs()  # -k -> k
        src = torch.where(src > size - 1, 2 * (size - 1) - src, src)  # size-1+k -> size-1-k
        return src, None
    valid = (src >= 0) & (src < size)
    return src.clamp(0, size - 1), valid


def crop_flip(
    x: torch.Tensor,
    dx: torch.Tensor | None,
    dy: torch.Tensor | None,
    flip: torch.Tensor | None,
    padding: int = 4,
    pad_mode: str = "reflect",
    channels_last: bool = False,
) -> torch.Tensor:
    """Crop each image at offsets (dx, dy) of its padded version, then mirror the samples where ``flip``.

    ``x``: (B, C, H, W) of any dtype; ``dx``/``dy``: (B,) integers in 0..2*padding (``padding, padding`` is
    the identity), or None for no crop; ``flip``: (B,) bool or None. Padded pixels are mirrored (``reflect``)
    or 0 (``zeros``, i.e. black before normalisation). Output has x's shape and dtype (channels_last memory
    format if asked); one gather, no padded copy.
    """
    _check_images(x)
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    b, c, h, w = x.shape
    dev = x.device
    if dx is None or dy is None:
        zeros = torch.zeros(b, dtype=torch.long, device=dev)
        padding, dx, dy = 0, zeros, zeros
    if pad_mode == "reflect" and padding >= min(h, w):
        raise ValueError(f"reflect padding {padding} needs images larger than {padding}, got {h}x{w}")
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if flip is not None:
        # Mirroring the crop = reading the crop's columns right to left.
        cols = torch.where(flip.view(b, 1).bool(), (w - 1) - cols, cols)
    r, r_ok = _source_index(rows, dy.to(dev, torch.long), padding, h, pad_mode)
    q, q_ok = _source_index(cols, dx.to(dev, torch.long), padding, w, pad_mode)
    flat = (r.unsqueeze(2) * w + q.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
    src = x.reshape(b, c, h * w)
    if channels_last:
        # Gather straight into an NHWC buffer: the later float conversion then runs layout-to-layout, which is
        # much cheaper than transposing the float batch afterwards.
        buf = torch.empty(b, h * w, c, dtype=x.dtype, device=dev)
        torch.gather(src, 2, flat, out=buf.permute(0, 2, 1))
        out = buf.view(b, h, w, c).permute(0, 3, 1, 2)
    else:
        out = torch.gather(src, 2, flat).view(b, c, h, w)
    if r_ok is not None and q_ok is not None:
        _fill_rect_(out, r_ok, q_ok, 0, outside=True)  # in place: the gather made a fresh tensor
    return out


def crop(
    x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, padding: int, pad_mode: str = "reflect"
) -> torch.Tensor:
    """Crop each image at offsets (dx, dy) in 0..2*padding of its padded version; see crop_flip."""
    return crop_flip(x, dx, dy, None, padding, pad_mode)


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where ``mask`` (B,) is true; the others are returned unchanged."""
    _check_images(x)
    return torch.where(mask.view(-1, 1, 1, 1).bool(), x.flip(-1), x)


def random_offsets(
    batch: int, padding: int, generator: torch.Generator, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform crop offsets (dx, dy), each (B,) in 0..2*padding."""
    d = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=device)
    return d[0], d[1]


def random_flip_mask(
    batch: int, generator: torch.Generator, device: torch.device | str | None = None
) -> torch.Tensor:
    """(B,) bool, each true with probability 0.5."""
    return torch.randint(0, 2, (batch,), generator=generator, device=device).bool()


def _cutout_lines(
    x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (B, H) and columns (B, W) covered by the square of side ``size`` centred at (cy, cx)."""
    b, _, h, w = x.shape
    dev = x.device
    y0 = (cy.to(dev, torch.long) - size // 2).view(b, 1)
    x0 = (cx.to(dev, torch.long) - size // 2).view(b, 1)
    rows = torch.arange(h, device=dev).view(1, h)
    cols = torch.arange(w, device=dev).view(1, w)
    return (rows >= y0) & (rows < y0 + size), (cols >= x0) & (cols < x0 + size)


def cutout_at(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square centred at (cy, cx) (B,) in each image, clipped at the borders.

    Rows ``cy - size//2 .. cy - size//2 + size - 1`` (same for columns). Returns a new tensor.
    """
    _check_images(x)
    out = x.clone()  # keeps x's memory format
    _fill_rect_(out, *_cutout_lines(out, cy, cx, size), 0)
    return out


def random_centres(
    batch: int, h: int, w: int, generator: torch.Generator, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cutout centres (cy, cx), each (B,), uniform over the HxW image."""
    cy = torch.randint(0, h, (batch,), generator=generator, device=device)
    cx = torch.randint(0, w, (batch,), generator=generator, device=device)
    return cy, cx


def _affine(
    mean: Sequence[float], std: Sequence[float], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (C,) float32, with ``x*scale + shift == (x/255 - mean)/std``."""
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * s)).to(torch.float32)
    shift = (-m / s).to(torch.float32)
    return scale.to(device), shift.to(device)


def _normalize(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channels_last: bool
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 ``x*scale + shift`` per channel, in the requested memory format.

    Two passes: an exact uint8 -> float32 copy, then one in-place fused multiply-add (a mixed-dtype ``mul``
    would allocate a float temporary anyway).
    """
    b, c, h, w = x.shape
    if not channels_last:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        out.copy_(x)
        return torch.addcmul(shift.view(1, c, 1, 1), out, scale.view(1, c, 1, 1), out=out)
    # NHWC: broadcasting a per-channel constant over an innermost dim of length 3 defeats vectorisation (~5x
    # slower on CPU), so view each image row as one W*C vector and tile the constants across it instead.
    nhwc = x.permute(0, 2, 3, 1)
    if not nhwc.is_contiguous():
        nhwc = nhwc.contiguous()  # transposing uint8 is 4x less traffic than transposing the float result
    out = torch.empty(b * h, w * c, dtype=torch.float32, device=x.device)
    out.copy_(nhwc.view(b * h, w * c))
    torch.addcmul(shift.repeat(w), out, scale.repeat(w), out=out)
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 ``(x/255 - mean)/std`` per channel."""
    _check_images(x)
    scale, shift = _affine(mean, std, x.device)
    return _normalize(x, scale, shift, channels_last)


def alternate_flip_mask(base: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
    """Alternating flips (airbench): image i is mirrored in epoch e iff ``base[i] xor (e odd)``.

    ``base`` is one random bool per training image drawn once per run, so over any two consecutive epochs
    every image is seen exactly once mirrored and once not, instead of by chance (random flips repeat the
    same orientation in both epochs for half of the images).
    """
    mask = base[idx]
    return ~mask if epoch % 2 else mask


class BatchAugment:
    """The training-time augmentation pipeline: random crop + flip (one gather), normalise, cutout.

    ``train(x, generator)`` takes a uint8 batch (B, 3, H, W) and a generator on x's device and returns the
    augmented, normalised float32 batch; ``eval(x)`` only normalises. Both return channels_last if asked.
    """

    def __init__(
        self,
        crop_padding: int = 4,
        pad_mode: str = "reflect",
        flip: bool = True,
        cutout: int = 0,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        channels_last: bool = True,
    ) -> None:
        if crop_padding < 0:
            raise ConfigError(f"augment.crop_padding must be >= 0, got {crop_padding}")
        if pad_mode not in PAD_MODES:
            raise ConfigError(f"augment.pad_mode must be one of {', '.join(PAD_MODES)}, got {pad_mode!r}")
        if cutout < 0:
            raise ConfigError(f"augment.cutout must be >= 0, got {cutout}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ConfigError(
                f"normalisation mean {tuple(mean)} / std {tuple(std)}: need equal lengths, std > 0"
            )
        self.crop_padding = crop_padding
        self.pad_mode = pad_mode
        self.flip = flip
        self.cutout = cutout
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.channels_last = channels_last
        self._consts: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"BatchAugment(crop_padding={self.crop_padding}, pad_mode={self.pad_mode!r}, flip={self.flip}, "
            f"cutout={self.cutout}, mean={self.mean}, std={self.std}, channels_last={self.channels_last})"
        )

    def _affine(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Cached per device: building them each step would mean a host->device copy per batch on GPUs.
        if device not in self._consts:
            self._consts[device] = _affine(self.mean, self.std, device)
        return self._consts[device]

    def train(self, x: torch.Tensor, generator: torch.Generator, flips: torch.Tensor | None = None) -> torch.Tensor:
        """Augment and normalise a uint8 batch; randomness drawn from ``generator`` (on x's device).

        ``flips``: (B,) bool mask of the images to mirror, given by the caller (alternating flips); None draws
        a random one. Ignored when ``flip`` is off.
        """
        _check_images(x)
        b, dev = x.shape[0], x.device
        # Fixed draw order (offsets, flips, cutout centres) keeps runs reproducible across versions.
        dx = dy = None
        if self.crop_padding > 0:
            dx, dy = random_offsets(b, self.crop_padding, generator, dev)
        if not self.flip:
            flips = None
        elif flips is None:
            flips = random_flip_mask(b, generator, dev)
        if dx is not None or flips is not None:
            x = crop_flip(x, dx, dy, flips, self.crop_padding, self.pad_mode, self.channels_last)
        out = _normalize(x, *self._affine(dev), self.channels_last)
        if self.cutout > 0:
            h, w = out.shape[-2:]
            cy, cx = random_centres(b, h, w, generator, dev)
            _fill_rect_(out, *_cutout_lines(out, cy, cx, self.cutout), 0)  # in place: out is ours
        return out

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise only (plus channels_last if configured)."""
        _check_images(x)
        return _normalize(x, *self._affine(x.device), self.channels_last)


__all__ = [
    "PAD_MODES",
    "BatchAugment",
    "alternate_flip_mask",
    "crop",
    "crop_flip",
    "cutout_at",
    "hflip",
    "normalize",
    "random_centres",
    "random_flip_mask",
    "random_offsets",
]
