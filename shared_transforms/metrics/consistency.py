"""Slice consistency: the striping index of a volume made slice by slice.

A 2D method enhances each slice on its own; where neighbouring slices disagree (independent noise, a network that
answers differently to nearly the same input), the volume shows stripes across the slicing axis in the two other
views. The second difference along an axis, ``V[i-1] - 2 V[i] + V[i+1]``, is large where a slice departs from the
mean of its neighbours; its energy across the slicing axis, divided by its energy within the slices (along the
slice's axis that the acquisition resolved as finely as the slicing axis, or both axes of the slice; same voxel
size: resampled volumes on the 1 mm grid), is a striping ratio. Anatomy has a ratio of its own
(about 1 for an isotropic image), so the index divides the prediction's ratio by the reference's (the high field's)
on the same mask: 1 means the prediction varies across slices as the high field does; above 1, stripes.

Written here: neither MONAI nor scikit-image has a measure of inter-slice consistency. Used by the benchmark's table
(issue 30: "the second-difference energy across the slicing axis relative to within the slice").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .inputs import as_array, as_mask


def _second_difference_energy(vol: np.ndarray, axis: int, mask: np.ndarray | None) -> float:
    """Mean squared second difference of ``vol`` along ``axis`` over the interior voxels (of ``mask``)."""
    d2 = np.diff(vol, n=2, axis=axis)
    inner = [slice(None)] * 3
    inner[axis] = slice(1, -1)
    if mask is None:
        return float(np.mean(d2**2))
    m = mask[tuple(inner)]
    return float(np.mean(d2[m] ** 2)) if m.any() else float("nan")


def striping_ratio(volume: Any, axis: int, mask: Any = None, within: int | None = None) -> float:
    """Second-difference energy across ``axis`` divided by that along ``within`` (an axis of the slice; None: the
    mean over both axes of the slice), inside ``mask`` when given. ``volume``: ``(X, Y, Z)``.

    For a volume made from a thick-slice acquisition, pass as ``within`` the slice's axis that is *not* the
    acquisition's thick one: along the thick axis every method (cubic interpolation too) has little detail, which
    would make any volume look striped."""
    vol = as_array(volume, "volume")
    m = as_mask(mask, vol.shape)
    across = _second_difference_energy(vol, axis, m)
    axes = [a for a in range(3) if a != axis] if within is None else [int(within)]
    if axis in axes:
        raise ValueError(f"within ({within}) must be an axis of the slice, not the slicing axis {axis}")
    inside = np.mean([_second_difference_energy(vol, a, m) for a in axes])
    return float(across / inside) if inside > 0 else float("nan")


def striping_index(pred: Any, ref: Any, axis: int, mask: Any = None, within: int | None = None) -> float:
    """:func:`striping_ratio` of ``pred`` divided by that of ``ref`` (the high field), both on ``mask``: 1 = as
    consistent across slices as the reference; above 1 = stripes across ``axis`` (issue 30's target: at most 1.15)."""
    return striping_ratio(pred, axis, mask, within) / striping_ratio(ref, axis, mask, within)
