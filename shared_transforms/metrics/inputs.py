"""Input handling shared by every metric: arrays, pairs, masks and the mask's bounding box, with clear errors.

Images are numpy arrays or torch tensors; a leading channel/batch axis of size 1 is dropped. Every check raises
:class:`~shared_transforms.errors.InputError` naming the argument (``pred``, ``ref``, ``mask``...).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError


def as_array(x: Any, name: str, ndim: int | None = 3, dtype: type | None = np.float64) -> np.ndarray:
    """``x`` as a finite float numpy array; leading size-1 axes dropped down to ``ndim`` (or to 3 when None).

    Args:
        ndim: the required number of axes, or None for 2 or 3.
        dtype: the float type of the result; None keeps a floating input's own type (float32 stays float32) and
            makes anything else float64.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if dtype is None:
        dtype = x.dtype if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating) else np.float64
    try:
        a = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise InputError(name, f"is not a numeric array ({err})") from None
    target = 3 if ndim is None else ndim
    while a.ndim > target and a.shape[0] == 1:
        a = a[0]
    if ndim is not None and a.ndim != ndim:
        raise InputError(name, f"has shape {a.shape}, expected a {ndim}D array (a leading axis of size 1 is accepted)")
    if ndim is None and a.ndim not in (2, 3):
        raise InputError(name, f"has shape {a.shape}, expected a 2D or 3D array")
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise InputError(name, f"contains {bad} NaN or Inf values")
    return a


def as_pair(pred: Any, ref: Any, ndim: int | None = 3) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``ref`` as float64 arrays of the same shape (see :func:`as_array`)."""
    p = as_array(pred, "pred", ndim)
    r = as_array(ref, "ref", ndim)
    if p.shape != r.shape:
        raise InputError("pred", f"has shape {p.shape}, but the reference has shape {r.shape}")
    return p, r


def as_mask(mask: Any, shape: tuple[int, ...], name: str = "mask", allow_empty: bool = False) -> np.ndarray | None:
    """``mask`` as a boolean array of ``shape`` (values > 0.5 are inside), or None."""
    if mask is None:
        return None
    if isinstance(mask, np.ndarray) and mask.dtype == bool and mask.ndim == len(shape):
        m = mask  # already boolean: skip the float conversion
    else:
        m = as_array(mask, name, len(shape)) > 0.5
    if m.shape != shape:
        raise InputError(name, f"has shape {m.shape}, but the images have shape {shape}")
    if not allow_empty and not m.any():
        raise InputError(name, "is empty (no voxel > 0.5)")
    return m


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel of a non-empty ``mask``, as one slice per axis."""
    box = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)
