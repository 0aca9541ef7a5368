"""Cartesian under-sampling masks ``M`` (fastMRI's ``data/subsample.py`` conventions): whole phase-encode columns
along the last spatial axis, a fully sampled centre, random or equispaced outer columns for an acceleration R, and a
per-file seed (:func:`seed_from_name`) so a volume always gets the same mask.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask

from .fourier import SeedLike, as_random_state

__all__ = ["MASK_PATTERNS", "cartesian_mask", "seed_from_name"]


MASK_PATTERNS = ("random", "equispaced")


def check_mask_params(acceleration: float, center_fraction: float, pattern: str) -> None:
    if not (np.isfinite(acceleration) and acceleration >= 1):
        raise ValueError(f"acceleration must be a finite number >= 1 (R, e.g. 4 or 8), got {acceleration}")
    if not (0 < center_fraction < 1):
        raise ValueError(f"center_fraction must be in (0, 1) (e.g. 0.08 for R=4, 0.04 for R=8), got {center_fraction}")
    if acceleration > 1 and center_fraction * acceleration >= 1:
        raise ValueError(
            f"center_fraction={center_fraction} with acceleration={acceleration} leaves no room for outer columns: "
            f"center_fraction must be below 1/acceleration={1 / acceleration:.4g}"
        )
    if pattern not in MASK_PATTERNS:
        raise ValueError(f"pattern must be one of {MASK_PATTERNS}, got {pattern!r}")


def _center_columns(num_cols: int, center_fraction: float) -> slice:
    """The fully sampled centre (fastMRI / MONAI placement: it contains the DC column ``num_cols // 2``)."""
    num_low = int(round(num_cols * center_fraction))
    pad = (num_cols - num_low + 1) // 2
    return slice(pad, pad + num_low)


def cartesian_mask(
    shape_hw: Sequence[int], acceleration: float, center_fraction: float, pattern: str = "random", *, seed: SeedLike
) -> torch.Tensor:
    """Cartesian column mask ``M`` along the last spatial axis (phase encode, fastMRI convention).

    ``round(W * center_fraction)`` centre columns are always sampled; the other columns are

    - ``"random"``: drawn uniformly without replacement so that exactly ``round(W / acceleration)`` columns are
      sampled in total. Written here rather than taken from MONAI's ``RandomKspaceMask`` / fastMRI's
      ``RandomMaskFunc``: those draw each column independently, so R is met only on average (about +-30 % in the
      number of columns at W = 256, R = 8).
    - ``"equispaced"``: MONAI's ``EquispacedKspaceMask`` (fastMRI's ``EquispacedMaskFunc``): every
      ``R (W - n_c) / (W - n_c R)``-th column from a random offset; the count is within a column or two of W / R.

    ``acceleration == 1`` gives a full mask.

    Args:
        shape_hw: ``(H, W)`` of the k-space (only W is used).
        acceleration: R >= 1, the ratio W / (number of sampled columns).
        center_fraction: fraction of W in the fully sampled centre, in (0, 1) and below 1 / R.
        pattern: ``"random"`` or ``"equispaced"``.
        seed: int seed (e.g. :func:`seed_from_name` of the volume, for a fixed mask per volume), a
            ``np.random.RandomState`` (a transform's ``self.R``; it advances) or a ``np.random.Generator``.

    Returns:
        bool mask ``(1, W, 1)``, broadcastable to k-space ``(..., H, W, 2)``; ``mask.flatten()`` is the column mask.
    """
    check_mask_params(acceleration, center_fraction, pattern)
    num_cols = int(shape_hw[-1])
    if num_cols < 2:
        raise ValueError(f"k-space needs at least 2 columns, got shape {tuple(shape_hw)}")
    rs = as_random_state(seed)
    if acceleration == 1:
        mask = np.ones(num_cols, dtype=bool)
    elif pattern == "random":
        mask = np.zeros(num_cols, dtype=bool)  # (W,)
        mask[_center_columns(num_cols, center_fraction)] = True
        num_outer = max(int(round(num_cols / acceleration)) - int(mask.sum()), 0)
        mask[rs.choice(np.flatnonzero(~mask), size=num_outer, replace=False)] = True
    else:
        # MONAI's EquispacedKspaceMask makes its mask only while masking a k-space; masking a dummy 1-row k-space is
        # cheap and gives the mask in `.mask`. Its RNG is `rs` itself, so a transform's self.R advances as usual.
        masker = EquispacedKspaceMask([center_fraction], [acceleration], spatial_dims=2, is_complex=True)
        masker.set_random_state(state=rs)
        masker(torch.zeros(1, 1, num_cols, 2))  # (C, H=1, W, 2)
        mask = masker.mask.reshape(-1).numpy() > 0.5  # (W,)
    return torch.as_tensor(mask).reshape(1, num_cols, 1)


def seed_from_name(name: str) -> int:
    """A stable int seed from a volume's file name (fixed validation masks per volume, like fastMRI's per-file seed).

    CRC-32 rather than ``hash``, which Python salts per process.
    """
    return zlib.crc32(str(name).encode("utf-8"))
