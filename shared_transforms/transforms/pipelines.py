"""The two preprocessing chains every bundle shares, defined once so that every method sees the same grid and the
same intensity scale (and the benchmark measures them all with one yardstick). All of it is MONAI's transforms
plus this package's checks.

- :func:`inference_transforms`: one volume ``image`` -> RAS, ``target_spacing`` (cubic), [0, 1] by percentiles (the
  bright end inside the volume's own head mask, so the amount of air in the field of view does not move the scale).
- :func:`pair_transforms`: a low/high pair (``image``/``label``, optional ``mask``) -> both on the high-field grid
  at ``target_spacing``: the high field resampled to that spacing, the low field onto the high-field grid (cubic),
  the mask by nearest neighbour (or made from the high field when absent), both images normalised to [0, 1]
  (each by its own head mask, as at inference).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import EnsureTyped, Orientationd, Spacingd

from ..io.volumes import LoadVolumed
from .geometry import CheckFieldOfViewd, CheckSameGridd, ResampleToMatchKeepSourced, SliceAlongAcquisitiond
from .intensity import BrainMaskd, PercentileNormalized


def inference_transforms(
    target_spacing: Sequence[float] | None = (1.0, 1.0, 1.0),
    lower: float = 1.0,
    upper: float = 99.0,
    key: str = "image",
    volume_only_for: str | None = None,
    scalp_mm: float = 0.0,
) -> list:
    """Load (with the contract's checks), orient to RAS, resample to ``target_spacing`` mm by cubic spline
    (covering the input's field of view; None keeps the file's own voxels, as k-space simulation needs), normalise
    the ``lower``..``upper`` percentiles to [0, 1] (the ``upper`` one inside the head,
    :class:`.intensity.PercentileNormalize` with ``head_mask=True``; with ``scalp_mm`` > 0 inside the head's
    interior, the brain without the scalp). ``volume_only_for``: a 3D bundle's name, which then refuses a single
    slice or thin slab in one line."""
    resample = (
        [] if target_spacing is None else [Spacingd(key, pixdim=tuple(target_spacing), mode=3, padding_mode="border")]
    )
    return [
        LoadVolumed(key, volume_only_for=volume_only_for, target_spacing=target_spacing),
        Orientationd(key, axcodes="RAS"),
        *resample,
        PercentileNormalized(key, lower=lower, upper=upper, head_mask=True, scalp_mm=scalp_mm),
        EnsureTyped(key, dtype=torch.float32),
    ]


def pair_transforms(
    target_spacing: Sequence[float] = (1.0, 1.0, 1.0),
    lower: float = 1.0,
    upper: float = 99.0,
    track_meta: bool = True,
    slice_along_acquisition: bool = False,
    scalp_mm: float = 0.0,
) -> list:
    """Align a low/high pair on the high-field grid (keys ``image`` = low, ``label`` = high, optional ``mask``).

    Raises a clear error naming the files when the low field covers less than half of the high field's field of
    view, or when the mask does not lie on the high field's voxel grid. Shapes after: ``(1, X, Y, Z)`` each.
    ``slice_along_acquisition`` (for 2D slice models, with ``track_meta=False``): reorder the three volumes so that
    slices along the first spatial axis follow the low field's acquisition (:class:`.geometry.SliceAlongAcquisitiond`).
    ``scalp_mm``: as in :func:`inference_transforms`, for both images (a bundle trains on the scale it infers on).
    """
    keys = ["image", "label", "mask"]
    return [
        LoadVolumed(keys, allow_missing_keys=True),
        CheckFieldOfViewd("image", ref_key="label"),
        CheckSameGridd("mask", ref_key="label"),
        Orientationd(keys, axcodes="RAS", allow_missing_keys=True),
        Spacingd(
            ["label", "mask"],
            pixdim=tuple(target_spacing),
            mode=[3, "nearest"],
            padding_mode="border",
            allow_missing_keys=True,
        ),
        ResampleToMatchKeepSourced("image", key_dst="label", mode=3, padding_mode="border"),
        BrainMaskd(source_key="label", mask_key="mask"),
        PercentileNormalized(["image", "label"], lower=lower, upper=upper, head_mask=True, scalp_mm=scalp_mm),
        *([SliceAlongAcquisitiond(keys, ref_key="image")] if slice_along_acquisition else []),
        EnsureTyped(keys, dtype=torch.float32, track_meta=track_meta),
    ]
