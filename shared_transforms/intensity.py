"""Intensity normalisation to the project's common [0, 1] scale, and a brain mask from intensities.

Seed 002 normalises every volume by its own 1st-99th percentiles, clipped to [0, 1]; every bundle's input and
output lives on that scale. Without a mask this is MONAI's ``ScaleIntensityRangePercentiles``; with a mask the
percentiles are taken over the mask's voxels (MONAI's transform has no mask argument) and MONAI's
``ScaleIntensityRange`` does the scaling.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, ScaleIntensityRangePercentiles, Transform
from monai.transforms.utils import get_largest_connected_component_mask
from scipy import ndimage
from skimage.morphology import ball

from .errors import InputError


def _source(img) -> str | None:
    meta = getattr(img, "meta", None)
    return None if meta is None else meta.get("filename_or_obj")


class PercentileNormalize(Transform):
    """Map the ``lower``-th..``upper``-th intensity percentiles of a volume to [0, 1] (clipped by default).

    Args:
        lower, upper: percentiles in [0, 100] (seed 002: 1 and 99).
        clip: clip the result to [0, 1].
    Call:
        ``img`` of shape ``(C, X, Y, Z)`` (numpy, tensor or MetaTensor), optional ``mask`` of the same spatial shape:
        percentiles inside the mask (non-zero voxels) when given.
    """

    def __init__(self, lower: float = 1.0, upper: float = 99.0, clip: bool = True):
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower, self.upper, self.clip = lower, upper, clip
        self.scaler = ScaleIntensityRangePercentiles(lower, upper, 0.0, 1.0, clip=clip, relative=False)

    def __call__(self, img, mask=None):
        if mask is None:
            lo, hi = self.percentiles(img)
            if hi <= lo:
                raise InputError(_source(img), f"the {self.lower}th and {self.upper}th percentiles are equal ({lo:g})")
            return self.scaler(img)
        lo, hi = self.percentiles(img, mask)
        if hi <= lo:
            raise InputError(_source(img), f"intensities inside the mask are constant ({lo:g})")
        return ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=self.clip)(img)

    def percentiles(self, img, mask=None) -> tuple[float, float]:
        """The two percentile values (over the mask's voxels when a mask is given)."""
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if mask is not None:
            m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            m = np.broadcast_to(m > 0, arr.shape)
            if not m.any():
                raise InputError(_source(img), "the mask is empty, cannot normalise inside it")
            arr = arr[m]
        lo, hi = np.percentile(arr, [self.lower, self.upper])
        return float(lo), float(hi)


class PercentileNormalized(MapTransform):
    """Dictionary version of :class:`PercentileNormalize`; ``mask_key`` (optional) restricts the percentiles."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 1.0,
        upper: float = 99.0,
        clip: bool = True,
        mask_key: str | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.normalize = PercentileNormalize(lower, upper, clip)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mask = d.get(self.mask_key) if self.mask_key else None
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key], mask)
        return d


def brain_mask_from_intensity(
    volume, threshold: float = 0.05, closing_radius_vox: int = 2, connectivity: int = 1
) -> np.ndarray:
    """A foreground (head/brain) mask from intensities alone, for data that comes without one.

    The brain mask of the CFM authors' evaluation code (Nguyen & Eldaly 2025, "Low-Field MR Image Quality
    Enhancement using a Conditional Flow Matching Model", arXiv 2510.12408; see bundles/cfm/docs/README.md), here in
    3D: threshold at ``threshold`` of the min-max range, morphological closing with a ball of ``closing_radius_vox``
    voxels (on a zero-padded copy, so nothing is eroded at the volume border; 0: no closing), largest connected
    component (MONAI ``get_largest_connected_component_mask``), holes filled. This is the project's one such mask:
    the metrics' default mask, :class:`BrainMaskd` and the low-field simulator's tissue fallback all use it.

    Args:
        volume: ``(X, Y, Z)`` or ``(1, X, Y, Z)``.
        threshold: relative intensity threshold in [0, 1] of the range ``max - min``.
        closing_radius_vox: radius of the closing ball in voxels.
        connectivity: neighbourhood of the connected components in scikit-image's convention: 1 = faces
            (6-connected), 3 = faces, edges and corners (26-connected, the 3D analogue of the authors' 8-connected
            2D mask; the metrics use it).
    Returns:
        boolean mask of the spatial shape ``(X, Y, Z)``; all False for a constant volume.
    """
    arr = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    arr = arr[0] if arr.ndim == 4 else arr
    lo, hi = float(arr.min()), float(arr.max())
    mask = (arr - lo) > threshold * (hi - lo) if hi > lo else np.zeros(arr.shape, bool)
    if closing_radius_vox > 0:
        r = closing_radius_vox
        mask = ndimage.binary_closing(np.pad(mask, r), structure=ball(r))[r:-r, r:-r, r:-r]
    mask = get_largest_connected_component_mask(mask, connectivity=connectivity)
    return ndimage.binary_fill_holes(mask)


class BrainMaskd(MapTransform):
    """Add ``mask_key`` from :func:`brain_mask_from_intensity` of ``source_key`` when the data has no mask yet."""

    def __init__(self, source_key: str, mask_key: str = "mask", threshold: float = 0.05):
        super().__init__([source_key], allow_missing_keys=False)
        self.source_key, self.mask_key, self.threshold = source_key, mask_key, threshold

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if d.get(self.mask_key) is None:
            src = d[self.source_key]
            mask = brain_mask_from_intensity(src, self.threshold)[None].astype(np.float32)
            if isinstance(src, torch.Tensor):
                from monai.data import MetaTensor

                mask = MetaTensor(torch.from_numpy(mask), affine=getattr(src, "affine", None))
            d[self.mask_key] = mask
        return d
